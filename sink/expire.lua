-- Gives a deleted row's version key (its tombstone) an expiry, atomically
-- with the check that the row is deleted, so that a row written meanwhile
-- keeps its version. A later write of the row SETs the version and so
-- clears the expiry.
--
-- KEYS[1] cdc:<schema>.<table>:<pk>     the row (absent: deleted)
-- KEYS[2] cdcver:<schema>.<table>:<pk>  its version
-- ARGV[1] the tombstone horizon in milliseconds
-- Returns 1 when the expiry was set, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('PTTL', KEYS[2]) ~= -1 then
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
