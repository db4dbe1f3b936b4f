-- Sets the availability cache of one item unless Redis already holds a
-- value from a later inventory write. Versions come from the inventory
-- store's cdcsync_available_version sequence, drawn while the item row was
-- locked, so they follow the order in which the item's writes committed.
--
-- KEYS[1] inventory:available:<item_id>  (string: on_hand - reserved - shipped)
-- KEYS[2] cdcsync:available:version      (hash: item_id -> version)
-- ARGV[1] item_id, ARGV[2] version, ARGV[3] available
-- ARGV[4] optional: a version Redis holds that the inventory store never
--         issued (the store was rebuilt or restored); Redis holding exactly
--         it counts as holding nothing.
-- Returns {1} when written; {0, version held, value held} when Redis holds
-- a version at least as new, so that the caller can tell a newer refresh
-- from one of a store that no longer exists.
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and cur ~= ARGV[4] and tonumber(cur) >= tonumber(ARGV[2]) then
  return {0, cur, redis.call('GET', KEYS[1]) or ''}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {1}
