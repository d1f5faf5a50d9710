--!include _lib.lua
-- A 429 cooldown that only moves forward: deadline = max(current, now + seconds).
-- KEYS[1] cooldown key; ARGV[1] seconds in microseconds.
-- Returns the microseconds left until the deadline.
local now = now_us()
local deadline = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]))
if current ~= nil and current > deadline then deadline = current end
if deadline > now then
  redis.call('SET', KEYS[1], string.format('%.0f', deadline), 'PX', math.ceil((deadline - now) / 1000))
end
return deadline - now
