--!include _lib.lua
-- One rate-limit decision.  KEYS[1] bucket; ARGV interval_us, burst, cost.
-- Returns one integer whenever it can (an array costs the client a few
-- microseconds to parse): remaining tokens (>= 0) when allowed, or
-- -1 - retry_after_us when denied holding no token; else {held, retry_after_us}.
local now = now_us()
local ok, remaining, retry, new_tat = gcra_check(
  tonumber(redis.call('GET', KEYS[1])), now, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if ok then
  gcra_store(KEYS[1], new_tat, now)
  return remaining
end
if remaining == 0 then
  return -1 - retry
end
return {remaining, retry}
