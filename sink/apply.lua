-- Applies one change to the Redis row cache, with the version check done
-- here, atomically, so that a replayed or late event never regresses or
-- resurrects a row, whichever sink process sends it.
--
-- Positions are 32 hex digits (commit LSN, change LSN, each zero-padded to
-- 16), after "g" and the source epoch in 8 hex digits when that is not 0
-- (positionKey in position.go), so comparing them byte by byte compares
-- stream positions: "g" sorts after every hex digit.
--
-- Every call first checks the epoch: ARGV[3] must be the value of the
-- cdcsync:epoch:redis key (KEYS[4], KEYS[2] for a truncate), or Redis lost its
-- data since the sink started; it then returns -1 and writes nothing.
--
-- Row events, ARGV[1] = c, u, r or d:
--   KEYS[1] cdc:<schema>.<table>:<pk>     the row: a hash of its non-null columns
--   KEYS[2] cdcver:<schema>.<table>:<pk>  position of the last applied event; kept
--                                         after a delete, as a tombstone
--   KEYS[3] cdctrunc:<schema>.<table>     position of the table's last truncate
--   KEYS[4] cdcsync:epoch:redis
--   ARGV[2] position, ARGV[3] epoch
--   ARGV[4] n, then ARGV[5 .. 4+n] the unchanged TOASTed columns, whose cached
--           values are kept; then column, value pairs from ARGV[5+n]
--   Returns 1 applied, 0 stale (not newer than the row's version), 2 at or
--   before the table's last truncate.
-- Truncate, ARGV[1] = t: KEYS[1] the cdctrunc key, KEYS[2] cdcsync:epoch:redis,
--   ARGV[2] position, ARGV[3] epoch. Moves the watermark forward; returns 1
--   if it moved, 0 if it was not newer.
-- Sweep, ARGV[1] = x: KEYS and ARGV[3] as for a row event. Drops the row and
--   its version when the version is before the table's truncate; returns 1
--   if dropped.

-- Byte-wise, because Lua's string < follows the server's collation locale.
local function before(a, b)
  if a == b then
    return false
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return y ~= nil and x < y
    end
  end
  return #a < #b
end

local op, pos = ARGV[1], ARGV[2]

local epochKey = KEYS[4]
if op == 't' then
  epochKey = KEYS[2]
end
if redis.call('GET', epochKey) ~= ARGV[3] then
  return -1
end

if op == 't' then
  local cur = redis.call('GET', KEYS[1])
  if cur and not before(cur, pos) then
    return 0
  end
  redis.call('SET', KEYS[1], pos)
  return 1
end

local trunc = redis.call('GET', KEYS[3])

if op == 'x' then
  if not trunc then
    return 0
  end
  local ver = redis.call('GET', KEYS[2])
  if ver and not before(ver, trunc) then
    return 0
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end

if trunc and not before(trunc, pos) then
  return 2
end
local ver = redis.call('GET', KEYS[2])
if ver and not before(ver, pos) then
  return 0
end

if op == 'd' then
  redis.call('DEL', KEYS[1])
else
  -- Write first, remove after: a write the server refuses (out of
  -- memory, permissions) then fails before anything changed, instead of
  -- leaving the row deleted. Once a script has written, Redis lets it
  -- finish, so the rest cannot fail for memory.
  local n = tonumber(ARGV[4])
  if #ARGV >= 5 + n then
    redis.call('HSET', KEYS[1], unpack(ARGV, 5 + n))
  end
  -- Columns the new image does not have are NULL now (or gone), except
  -- the unchanged TOASTed ones, which keep their cached value.
  local keep = {}
  for i = 1, n do
    keep[ARGV[4 + i]] = true
  end
  for i = 5 + n, #ARGV, 2 do
    keep[ARGV[i]] = true
  end
  local stale = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[f] then
      stale[#stale + 1] = f
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[1], unpack(stale))
  end
end
redis.call('SET', KEYS[2], pos)
return 1
