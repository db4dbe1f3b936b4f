-- Sets the availability cache of one item unless Redis already holds a
-- value from a later inventory write. Versions come from the inventory
-- store's cdcsync_available_version sequence, drawn while the item row was
-- locked, so they follow the order in which the item's writes committed.
--
-- KEYS[1] inventory:available:<item_id>  (string: on_hand - reserved - shipped)
-- KEYS[2] cdcsync:available:version      (hash: item_id -> version)
-- ARGV[1] item_id, ARGV[2] version, ARGV[3] available
-- Returns 1 when written, 0 when Redis holds a newer version.
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
