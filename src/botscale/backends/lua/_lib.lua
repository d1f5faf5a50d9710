-- botscale: functions shared by the scripts below (prepended at load time).
-- GCRA as in botscale/_gcra.py (gcra_update), in integer microseconds of the
-- Redis server clock, so every process agrees on "now" and all maths is exact.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- One GCRA decision.  Returns allowed, remaining, retry_after_us, new_tat.
local function gcra_check(tat, now, interval, burst, cost)
  local base = tat
  if base == nil or base < now then base = now end
  local capacity = burst * interval
  local new_tat = base + cost * interval
  if new_tat - now <= capacity then
    return true, math.floor((capacity - (new_tat - now)) / interval), 0, new_tat
  end
  -- Denied: the whole tokens held now, fewer than cost.
  local held = 0
  if cost > 1 then
    held = math.min(cost - 1, math.floor((capacity - (base - now)) / interval))
    if held < 0 then held = 0 end
  end
  return false, held, new_tat - now - capacity, nil
end

-- Store a TAT that expires when the bucket is full again.
local function gcra_store(key, new_tat, now)
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
