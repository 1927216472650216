-- Claim due jobs: move them from the queue into the in-flight set under a lease.
-- Atomic, so two daemons never claim the same job.
--
-- KEYS[1] queue     sorted set: member -> due time (Unix seconds, may be fractional)
-- KEYS[2] inflight  sorted set: member -> lease deadline (Unix seconds)
-- KEYS[3] attempts  hash: member -> "<attempts>" or, while leased, "<attempts> <token>"
-- ARGV[1] most jobs to claim
-- ARGV[2] lease length in milliseconds
-- ARGV[3] token prefix, unique to this daemon process
-- ARGV[4] most expired leases to take back
--
-- Returns {now, next_due, recovered, member1, score1, attempt1, id1, token1, member2, ...}
-- where next_due is the earliest score left in the queue ("" when it is empty).

-- Redis before 5.0 refuses writes after TIME unless effects replication is on; later
-- versions always replicate effects, and pcall keeps this harmless where it is gone.
pcall(redis.replicate_commands)

-- One clock for every daemon: Redis's own, so skewed hosts agree on what is due.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nows = string.format('%.6f', now)
local lease = tonumber(ARGV[2]) / 1000

-- Leases that ran out: the daemon holding them died or lost Redis mid-delivery.
-- They are due again at once; the cut attempt stays counted.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', nows, 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  if not redis.call('ZSCORE', KEYS[1], m) then
    redis.call('ZADD', KEYS[1], nows, m)
  end
  local a = redis.call('HGET', KEYS[3], m)
  if a then
    redis.call('HSET', KEYS[3], m, string.match(a, '^%d+'))
  end
end

local out = {nows, '', #expired}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local deadline = string.format('%.6f', now + lease)
for i = 1, #due, 2 do
  local m = due[i]
  local token = ARGV[3] .. '.' .. ((i + 1) / 2)
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], deadline, m)
  local prev = redis.call('HGET', KEYS[3], m)
  local n = 1
  if prev then
    n = tonumber(string.match(prev, '^%d+')) + 1
  end
  redis.call('HSET', KEYS[3], m, n .. ' ' .. token)
  out[#out + 1] = m
  out[#out + 1] = due[i + 1]
  out[#out + 1] = n
  out[#out + 1] = redis.sha1hex(m)
  out[#out + 1] = token
end

local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[2] = first[2]
end
return out
