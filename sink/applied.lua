-- Records that one partition of a sink is applied through a watermark's
-- LSN, then recomputes the sink's applied-through position: the lowest
-- watermark over every partition of every topic the sink follows, once
-- each has one. The position never moves backwards. Run after the batch's
-- data, on the same connection, so it is never ahead of what is visible.
--
-- LSNs are compared as 16 upper-case hex digits (high then low half,
-- zero-padded), byte by byte; the position is stored as Postgres prints it.
--
-- KEYS[1] cdcsync:applied:<sink>             string: applied-through LSN (0/16B3748)
-- KEYS[2] cdcsync:applied:<sink>:partitions  hash: <topic>/<partition> -> "<hex LSN> <as-of ms> <partitions>"
-- KEYS[3] cdcsync:applied:<sink>:source_ts   string: as-of (Unix ms) of the applied LSN
-- KEYS[4] cdcsync:epoch:<sink> (optional)     the sink's Redis data epoch
-- ARGV[1] <topic>/<partition>, ARGV[2] hex LSN, ARGV[3] as-of ms,
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

local function tohex(lsn)
  local hi, lo = string.match(lsn, '^(%x+)/(%x+)$')
  if not hi then
    return nil
  end
  return pad(hi) .. pad(lo)
end

local function half(h)
  h = string.gsub(h, '^0+', '')
  if h == '' then
    return '0'
  end
  return h
end

local function totext(h)
  return half(string.sub(h, 1, 8)) .. '/' .. half(string.sub(h, 9, 16))
end

if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return -1
end

local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur or before(string.sub(cur, 1, 16), ARGV[2]) then
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
