-- Enqueue a job exactly as a producer does: ZADD of the member string.
--
-- KEYS[1] queue
-- ARGV[1] member, ARGV[2] "at" (ARGV[3] is Unix seconds) or "in" (ARGV[3] is seconds
-- from now by Redis's clock, the clock every daemon judges due times by)
-- Returns {score, 1 when added or 0 when the member was there and was rescheduled}

pcall(redis.replicate_commands)
local score = tonumber(ARGV[3])
if ARGV[2] == 'in' then
  local t = redis.call('TIME')
  score = score + tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local s = string.format('%.6f', score)
return {s, redis.call('ZADD', KEYS[1], s, ARGV[1])}
