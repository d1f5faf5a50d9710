-- botscale: functions shared by the scripts below (prepended at load time).
-- GCRA as in botscale/_gcra.py (gcra_update), in integer microseconds of the
-- Redis server clock, so every process agrees on "now" and all maths is exact.
-- Kept lean: every decision runs this code (numeric strings coerce in arithmetic).

local function now_us()
  local t = redis.call('TIME')
  return t[1] * 1000000 + t[2]
end

-- One GCRA decision.  Returns allowed, remaining (when denied: whole tokens
-- held, fewer than cost), retry_after_us, new_tat (nil when denied).
local function gcra_check(tat, now, interval, burst, cost)
  if tat == nil or tat < now then tat = now end
  local capacity = burst * interval
  local debt = tat + cost * interval - now
  if debt <= capacity then
    return true, math.floor((capacity - debt) / interval), 0, now + debt
  end
  local held = 0
  if cost > 1 then
    held = math.min(cost - 1, math.floor((capacity - (tat - now)) / interval))
    if held < 0 then held = 0 end
  end
  return false, held, debt - capacity, nil
end

-- Store a TAT that expires when the bucket is full again (a number argument
-- reaches Redis as its exact integer digits: no string.format needed).
local function gcra_store(key, new_tat, now)
  redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000))
end
