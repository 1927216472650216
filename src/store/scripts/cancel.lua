-- Cancel pending jobs by member, as a producer's ZREM does, and drop their attempt
-- counts. A job in flight is left alone: its attempt is under way.
--
-- A job scheduled under a producer's id leaves the id index too.
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts, KEYS[4] index (see ids.lua; left
-- out for a user whose ACL does not allow it)
-- ARGV members
-- Returns per member: 1 cancelled, 0 not pending, -1 in flight

local out = {}
for i, m in ipairs(ARGV) do
  if redis.call('ZSCORE', KEYS[2], m) then
    out[i] = -1
  elseif redis.call('ZREM', KEYS[1], m) == 1 then
    redis.call('HDEL', KEYS[3], m)
    local id = KEYS[4] and redis.call('HGET', KEYS[4], 'job:' .. m)
    if id then
      if redis.call('HGET', KEYS[4], 'id:' .. id) == m then
        redis.call('HDEL', KEYS[4], 'id:' .. id, 'parked:' .. id)
      end
      redis.call('HDEL', KEYS[4], 'job:' .. m, 'next:' .. id)
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
