-- Brings a resumed flow's parked jobs back, one page per call: each member listed in
-- the flow's parked set that still waits at the score claim.lua parked it at goes back
-- to its due score (listed beside it), so it goes out in due order, its first due time
-- and attempt count kept. A member a producer cancelled (ZREM) or rescheduled (ZADD XX)
-- meanwhile is only unlisted: the producer's word stands.
--
-- KEYS[1] queue, KEYS[2] attempts hash, KEYS[3] the flow's parked set in this shard
-- ARGV[1] most members per call
-- Returns {members brought back, members left in the parked set}

pcall(redis.replicate_commands)
local page = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local moved = 0
for i = 1, #page, 2 do
  local m, due = page[i], page[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], m)
  local value = redis.call('HGET', KEYS[2], m)
  local at = value and string.match(value, ' @(%S+)$')
  if score and at and tonumber(at) == tonumber(score) then
    redis.call('ZADD', KEYS[1], due, m)
    redis.call('HSET', KEYS[2], m, string.sub(value, 1, #value - #at) .. due)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[3], m)
end
return {moved, redis.call('ZCARD', KEYS[3])}
