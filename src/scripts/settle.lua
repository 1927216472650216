-- Record the outcomes of attempts, in one batch.
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts (see claim.lua), KEYS[4] failed list
-- ARGV holds groups of four: op, member, lease, arg
--   lease  the attempts value the claim wrote ("<attempts>:<first due> <token>"): the
--          outcome only counts while the job is still leased to the attempt that made it
--   done     delivered: forget the job
--   retry    arg = delay in ms: back into the queue at now + delay, same member string
--   fail     arg = the record to append to the failed list
--   release  arg = the job's due score: it never started, so undo the claim
--
-- Returns the 1-based group numbers whose lease was no longer held (a late outcome:
-- the job was already taken back, so this one changes nothing). Writing a batch twice
-- (its reply was lost) is harmless for the same reason.
--
-- As in claim.lua, writes that add come before writes that remove.

pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local stale = {}
for i = 1, #ARGV, 4 do
  local op, m, lease, arg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HGET', KEYS[3], m) ~= lease then
    stale[#stale + 1] = (i + 3) / 4
  else
    local n = tonumber(string.match(lease, '^%d+'))
    local first = string.match(lease, '^%d+:([^ ]+)') or string.format('%.6f', now)
    if op == 'done' then
      redis.call('HDEL', KEYS[3], m)
    elseif op == 'fail' then
      redis.call('RPUSH', KEYS[4], arg)
      redis.call('HDEL', KEYS[3], m)
    elseif op == 'retry' then
      -- A producer may have added the same member again for later: keep its score.
      if not redis.call('ZSCORE', KEYS[1], m) then
        redis.call('ZADD', KEYS[1], string.format('%.6f', now + tonumber(arg) / 1000), m)
      end
      redis.call('HSET', KEYS[3], m, n .. ':' .. first)
    elseif op == 'release' then
      if not redis.call('ZSCORE', KEYS[1], m) then
        redis.call('ZADD', KEYS[1], arg, m)
      end
      if n > 1 then
        redis.call('HSET', KEYS[3], m, (n - 1) .. ':' .. first)
      else
        redis.call('HDEL', KEYS[3], m)
      end
    else
      return redis.error_reply('settle.lua: unknown op ' .. tostring(op))
    end
    redis.call('ZREM', KEYS[2], m)
  end
end
return stale
