--!include _lib.lua
-- One rate-limit decision.  KEYS[1] bucket; ARGV interval_us, burst, cost.
-- Returns {allowed 0/1, remaining tokens, retry_after_us}.
local now = now_us()
local ok, remaining, retry, new_tat = gcra_check(
  tonumber(redis.call('GET', KEYS[1])), now, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if ok then
  gcra_store(KEYS[1], new_tat, now)
  return {1, remaining, 0}
end
return {0, remaining, retry}
