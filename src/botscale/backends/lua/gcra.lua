-- One rate-limit decision.  KEYS[1] bucket; ARGV interval_us, burst, cost.
-- The hottest script (one run per incoming update), so written out flat:
-- _lib.lua's gcra_check/gcra_store inlined (the same maths; the contract
-- suite checks both against the memory backend).  Calling those functions
-- costs the server about 10 % more per decision.
-- Returns one integer whenever it can (an array costs the client a few
-- microseconds to parse): remaining tokens (>= 0) when allowed, or
-- -1 - retry_after_us when denied holding no token; else {held, retry_after_us}.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local capacity = burst * interval
local debt = tat + cost * interval - now
if debt <= capacity then
  -- a number argument reaches Redis as its exact integer digits
  redis.call('SET', KEYS[1], now + debt, 'PX', math.ceil(debt / 1000))
  return math.floor((capacity - debt) / interval)
end
local held = 0
if cost > 1 then
  held = math.min(cost - 1, math.floor((capacity - (tat - now)) / interval))
  if held < 0 then held = 0 end
end
if held == 0 then
  return -1 - (debt - capacity)
end
return {held, debt - capacity}
