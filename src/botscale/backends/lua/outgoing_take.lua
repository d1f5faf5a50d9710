--!include _lib.lua
-- One outgoing-call decision for flood control across processes
-- (botscale._flood.MemoryFloodBudget.take, in server microseconds).
-- KEYS: lane bucket, chat bucket, bot cooldown, chat cooldown (one hash tag).
-- ARGV: has_chat, lane interval_us, burst, cost, chat interval_us, burst, cost.
-- Returns {granted 0/1, chat_wait_us, lane_wait_us}.
local now = now_us()
local bot_hold = (tonumber(redis.call('GET', KEYS[3])) or 0) - now
local has_chat = ARGV[1] == '1'
local chat_interval, chat_burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local chat_tat, chat_wait, chat_hold = nil, 0, 0
if has_chat then
  chat_hold = (tonumber(redis.call('GET', KEYS[4])) or 0) - now
  local _, _, retry, new_tat = gcra_check(
    tonumber(redis.call('GET', KEYS[2])), now, chat_interval, chat_burst, tonumber(ARGV[7]))
  chat_wait, chat_tat = retry, new_tat
end
if chat_hold > 0 or chat_wait > 0 then
  return {0, math.max(chat_hold, chat_wait), 0}
end
local ok, _, lane_retry, lane_tat = gcra_check(
  tonumber(redis.call('GET', KEYS[1])), now, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if bot_hold > 0 or not ok then
  return {0, 0, math.max(bot_hold, lane_retry)}
end
gcra_store(KEYS[1], lane_tat, now)
local next_chat = 0
if has_chat then
  gcra_store(KEYS[2], chat_tat, now)
  next_chat = math.max(0, chat_tat - now - (chat_burst - 1) * chat_interval)
end
return {1, next_chat, 0}
