-- A daemon's heartbeat, every 2 s: writes its record, drops the records of daemons
-- that stopped beating, and reads whether the queue is paused. Records carry their
-- expiry in front ("<expires> <json>") because hash fields do not expire before
-- Redis 7.4; the hash holds one field per live daemon, so reading it whole is cheap.
-- Expiry is judged by Redis's clock, never a daemon's: a daemon on a host whose clock
-- is off would otherwise drop the others' records, or keep its own for hours.
--
-- KEYS[1] daemons hash, KEYS[2] pause key, KEYS[3] paused flows hash
-- ARGV[1] this daemon's id, ARGV[2] its record ("" to remove it: a clean stop),
-- ARGV[3] how long the record stands, in seconds
-- Returns {Redis's time (Unix s), the pause note or false, the live daemons' ids,
-- the paused flows}: the ids give each daemon its share of the flow limits.

pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local expires = tonumber(string.match(all[i + 1], '^(%S+)'))
  if not expires or expires < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = all[i]
  end
end
local flows = {}
if KEYS[3] then
  flows = redis.call('HKEYS', KEYS[3])
end
return {string.format('%.6f', now), redis.call('GET', KEYS[2]), live, flows}
