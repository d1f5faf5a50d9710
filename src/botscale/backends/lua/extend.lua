-- Extend a lock only if we still hold it.  KEYS[1] lock; ARGV[1] token, ARGV[2] ttl_ms.
-- Returns 1 if extended, 0 if the lock had expired.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
