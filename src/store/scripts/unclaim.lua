-- Undo a claim whose reply never arrived (the connection failed mid-call): its jobs
-- were never handed to a worker, so they go back into the queue, due now, with their
-- attempt count as before. Without this they would wait for their lease to expire.
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts (see claim.lua)
-- ARGV[1] the token prefix the lost claim was called with
-- Returns how many jobs were put back.
--
-- The in-flight set holds at most the jobs all daemons have in hand, so reading it
-- whole is cheap, and this runs only after a failed call.

pcall(redis.replicate_commands)
local t = redis.call('TIME')
local nows = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local mark = ' ' .. ARGV[1] .. '.'

local released = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local a = redis.call('HGET', KEYS[3], m)
  if a and string.find(a, mark, 1, true) then
    if not redis.call('ZSCORE', KEYS[1], m) then
      redis.call('ZADD', KEYS[1], nows, m)
    end
    local n = tonumber(string.match(a, '^%d+')) or 1
    local first = string.match(a, '^%d+:([^ ]+)') or nows
    if n > 1 then
      redis.call('HSET', KEYS[3], m, (n - 1) .. ':' .. first)
    else
      redis.call('HDEL', KEYS[3], m)
    end
    redis.call('ZREM', KEYS[2], m)
    released = released + 1
  end
end
return released
