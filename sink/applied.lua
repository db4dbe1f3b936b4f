-- Records that one partition of a sink is applied through a watermark's
-- LSN, then recomputes the sink's applied-through position: the lowest
-- watermark over every partition of every topic the sink follows, once
-- each has one. The position never moves backwards. Run after the batch's
-- data, on the same connection, so it is never ahead of what is visible.
--
-- Positions are compared as 24 upper-case hex digits (the source epoch,
-- then the LSN's high and low halves, each zero-padded to 8), byte by
-- byte: a newer epoch is later whatever its LSN (after a failover the new
-- primary's LSNs may be below the old one's). Values written before epochs
-- existed have 16 digits (epoch 0). The position is stored as Postgres
-- prints the LSN, after "<epoch>@" when the epoch is not 0.
--
-- KEYS[1] cdcsync:applied:<sink>             string: applied-through position (0/16B3748, 1795600000@0/16B3748)
-- KEYS[2] cdcsync:applied:<sink>:partitions  hash: <topic>/<partition> -> "<hex position> <as-of ms> <partitions>"
-- KEYS[3] cdcsync:applied:<sink>:source_ts   string: as-of (Unix ms) of the applied LSN
-- KEYS[4] cdcsync:epoch:<sink> (optional)     the sink's Redis data epoch
-- ARGV[1] <topic>/<partition>, ARGV[2] hex position (24 digits), ARGV[3] as-of ms,
-- ARGV[4] the topic's partition count, ARGV[5] the epoch the sink loaded
-- (with KEYS[4]), ARGV[6..] the topics the sink follows
-- Returns {applied LSN or false, as-of ms or false}, or -1 when KEYS[4]
-- does not hold ARGV[5]: Redis lost the data the position would describe,
-- so nothing is recorded until the sink has rebuilt it.

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

local function pad(h)
  return string.rep('0', 8 - #h) .. string.upper(h)
end

local function tohex(pos)
  local epoch, lsn = string.match(pos, '^(%d+)@(.*)$')
  if not epoch then
    epoch, lsn = '0', pos
  end
  local hi, lo = string.match(lsn, '^(%x+)/(%x+)$')
  if not hi then
    return nil
  end
  return string.format('%08X', tonumber(epoch)) .. pad(hi) .. pad(lo)
end

-- norm gives a stored hex position its epoch digits (16-digit values are
-- from before epochs: epoch 0).
local function norm(h)
  if #h == 16 then
    return '00000000' .. h
  end
  return h
end

local function half(h)
  h = string.gsub(h, '^0+', '')
  if h == '' then
    return '0'
  end
  return h
end

local function totext(h)
  local lsn = half(string.sub(h, 9, 16)) .. '/' .. half(string.sub(h, 17, 24))
  local epoch = tonumber(string.sub(h, 1, 8), 16)
  if epoch == 0 then
    return lsn
  end
  return string.format('%d', epoch) .. '@' .. lsn
end

if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return -1
end

local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur or before(norm(string.match(cur, '^(%x+)')), ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
end

local low, lowts = nil, nil
local complete = true
for i = 6, #ARGV do
  local topic = ARGV[i]
  local first = redis.call('HGET', KEYS[2], topic .. '/0')
  if not first then
    complete = false
    break
  end
  local n = tonumber(string.match(first, ' (%d+)$'))
  local fields = {}
  for p = 0, n - 1 do
    fields[#fields + 1] = topic .. '/' .. p
  end
  local vals = redis.call('HMGET', KEYS[2], unpack(fields))
  for j = 1, n do
    local v = vals[j]
    if not v then
      complete = false
      break
    end
    local h, ts = string.match(v, '^(%x+) (%-?%d+)')
    h = norm(h)
    if not low or before(h, low) then
      low = h
    end
    if not lowts or tonumber(ts) < tonumber(lowts) then
      lowts = ts
    end
  end
  if not complete then
    break
  end
end

if complete and low then
  local applied = redis.call('GET', KEYS[1])
  local ah = applied and tohex(applied)
  if not ah or before(ah, low) then
    redis.call('SET', KEYS[1], totext(low))
    redis.call('SET', KEYS[3], lowts)
  end
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[3])}
