-- Claim due jobs: move them from the queue into the in-flight set under a lease.
-- Atomic, so two daemons never claim the same job.
--
-- KEYS[1] queue     sorted set: member -> due time (Unix seconds, may be fractional)
-- KEYS[2] inflight  sorted set: member -> lease deadline (Unix seconds)
-- KEYS[3] attempts  hash: member -> "<attempts>" or, while leased, "<attempts> <token>"
-- KEYS[4] failed    list: records of jobs that failed for good or were malformed
-- ARGV[1] most jobs to claim
-- ARGV[2] lease length in milliseconds
-- ARGV[3] token prefix, unique to this call of this daemon
-- ARGV[4] most expired leases to take back
-- ARGV[5] the largest member, in bytes, that is handed to the daemon (maxJobBytes)
--
-- Returns {now, next_due, recovered, merged, dropped, member1, score1, attempt1, id1,
-- token1, ...} where next_due is the earliest score left in the queue ("" when it is
-- empty) and dropped lists the jobs set aside here, one a line: "skip <id> <field>
-- <key>" for a skip condition that held, "oversize <id> <bytes>" for a member over
-- maxJobBytes (recorded in the failed list with a printable prefix, never sent to the
-- daemon, so a huge member costs it no memory).
--
-- Skip conditions (`skipIfExists`, `skipIfMissing` in the member) name keys that are not
-- in KEYS: on Redis Cluster they must share the queue's hash tag, so that they live in
-- the same slot. Only members that mention "skipIf" are decoded, so other jobs cost
-- nothing extra.
--
-- Writes that add come before writes that remove: Redis does not roll a script back
-- when a command fails halfway, and a job must never end up in no key at all.

-- Redis before 5.0 refuses writes after TIME unless effects replication is on; later
-- versions always replicate effects, and pcall keeps this harmless where it is gone.
pcall(redis.replicate_commands)

-- One clock for every daemon: Redis's own, so skewed hosts agree on what is due.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nows = string.format('%.6f', now)
local lease = tonumber(ARGV[2]) / 1000

-- The attempt count in an attempts-hash value; anything unreadable counts as none.
local function attempts_of(value)
  return value and tonumber(string.match(value, '^%d+')) or 0
end

-- Leases that ran out: the daemon holding them died or lost Redis mid-delivery.
-- They are due again at once; the cut attempt stays counted.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', nows, 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(expired) do
  if not redis.call('ZSCORE', KEYS[1], m) then
    redis.call('ZADD', KEYS[1], nows, m)
  end
  redis.call('HSET', KEYS[3], m, attempts_of(redis.call('HGET', KEYS[3], m)))
  redis.call('ZREM', KEYS[2], m)
end

-- The skip condition of a member that holds, as "skipIfExists <key>", or nil.
local function skip_reason(m)
  if not string.find(m, '"skipIf', 1, true) then
    return nil
  end
  local ok, job = pcall(cjson.decode, m)
  if not ok or type(job) ~= 'table' then
    return nil -- malformed: the daemon sets it aside with the reason
  end
  local exists, missing = job.skipIfExists, job.skipIfMissing
  if type(exists) == 'string' and exists ~= '' and redis.call('EXISTS', exists) == 1 then
    return 'skipIfExists ' .. exists
  end
  if type(missing) == 'string' and missing ~= '' and redis.call('EXISTS', missing) == 0 then
    return 'skipIfMissing ' .. missing
  end
  return nil
end

local out = {nows, '', #expired, 0, ''}
local dropped = {}
local max_bytes = tonumber(ARGV[5])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local deadline = string.format('%.6f', now + lease)
for i = 1, #due, 2 do
  local m = due[i]
  local skip = #m <= max_bytes and skip_reason(m)
  if #m > max_bytes then
    local id = redis.sha1hex(m)
    local prefix = (string.gsub(string.sub(m, 1, 200), '[^\32-\126]', '?'))
    redis.call('RPUSH', KEYS[4], cjson.encode({
      Id = id, attempts = 0, dueAt = tonumber(due[i + 1]), failedAt = now,
      error = 'malformed job: the member is ' .. #m .. ' bytes, over maxJobBytes (' .. max_bytes .. ')',
      memberBytes = #m, memberPrefix = prefix,
    }))
    redis.call('HDEL', KEYS[3], m)
    redis.call('ZREM', KEYS[1], m)
    dropped[#dropped + 1] = 'oversize ' .. id .. ' ' .. #m
  elseif skip then
    redis.call('HDEL', KEYS[3], m)
    redis.call('ZREM', KEYS[1], m)
    dropped[#dropped + 1] = 'skip ' .. redis.sha1hex(m) .. ' ' .. skip
  elseif redis.call('ZSCORE', KEYS[2], m) then
    -- The same member was added again while its job is in flight: one member is one
    -- job (PROTOCOL §1), so this copy merges into the attempt under way.
    redis.call('ZREM', KEYS[1], m)
    out[4] = out[4] + 1
  else
    local token = ARGV[3] .. '.' .. ((i + 1) / 2)
    local n = attempts_of(redis.call('HGET', KEYS[3], m)) + 1
    redis.call('HSET', KEYS[3], m, n .. ' ' .. token)
    redis.call('ZADD', KEYS[2], deadline, m)
    redis.call('ZREM', KEYS[1], m)
    out[#out + 1] = m
    out[#out + 1] = due[i + 1]
    out[#out + 1] = n
    out[#out + 1] = redis.sha1hex(m)
    out[#out + 1] = token
  end
end

out[5] = table.concat(dropped, '\n')
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[2] = first[2]
end
return out
