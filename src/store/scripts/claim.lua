-- One round of the main loop in one call: record the outcomes of finished attempts,
-- then claim due jobs, moving them from the queue into the in-flight set under a lease.
-- Atomic, so two daemons never claim the same job; one round trip per round.
--
-- KEYS[1] queue     sorted set: member -> due time (Unix seconds, may be fractional)
-- KEYS[2] inflight  sorted set: member -> lease deadline (Unix seconds)
-- KEYS[3] attempts  hash: member -> its attempts so far and its first due time:
--                   "<n>:<first due> <token>" while leased (claimed for attempt n);
--                   "<n>:<first due> @<score>" while it waits in the queue after n
--                   attempts (a retry, or n = 0: a first attempt put back untried),
--                   where <score> is the score this script left it at. Older daemons
--                   wrote "<n>" and "<n>:<first due>"; both are still read (as a count
--                   with no recorded score). No entry: no attempt yet, first due = score.
-- KEYS[4] failed    list: records of jobs that failed for good or were malformed
-- KEYS[5] index     hash "<queue>:ids": the producer-id index of ids.lua (read and kept
--                   true here: a job that ends leaves it, a job scheduled during an
--                   attempt takes its id's place when the attempt ends; ids_after.lua).
--                   Left out for a user whose ACL does not allow it: no job has an id.
-- ARGV[1] most jobs to claim (0: only record outcomes)
-- ARGV[2] lease length in milliseconds
-- ARGV[3] token prefix, unique to this call of this daemon
-- ARGV[4] most expired leases to take back
-- ARGV[5] the largest member, in bytes, that is handed to the daemon (maxJobBytes)
-- ARGV[6] flows with no room (dispatch/flow.rs), one a line: "<next slot> <spacing>
--         <flow>"; "" or absent for none. A due job of one of them that has never
--         been put back (no attempts entry) is not claimed: it goes straight to its
--         flow's next slot, as the daemon would send it, without costing a round trip
--         or a place in the claim. Up to 1000 due members beyond the claim's limit are
--         looked at for them, so that a backlog for one host spreads in a few calls;
--         and while any flow is full, jobs that fell due within the last second are
--         claimed first, the latest first (up to half the limit), so that the jobs behind the backlog
--         are claimed on time meanwhile.
-- ARGV[7...] outcomes, in groups of four: op, member, lease, arg
--   lease    the attempts value the claim wrote ("<attempts>:<first due> <token>"): the
--            outcome only counts while the job is still leased to the attempt that made it
--   done     delivered: forget the job
--   retry    arg = delay in ms: back into the queue at now + delay, same member string
--   fail     arg = the record to append to the failed list
--   release  arg = a due score: the attempt never started (shutdown, a paused host, its
--            flow had no room), so undo the claim and queue the job at that score
--   park     arg = "<until> <due> <flow>": as release at <until>, and list the member
--            at <due> in "<queue>:parked:<flow>" (its flow is paused; unpark.lua);
--            a job with a producer id has the flow noted in the index ("parked:<id>")
--
-- Returns {now, next_due, recovered, merged, dropped, stale, deferred, member1, score1,
-- attempt1, lease1, first_due1, id1, ...} (deferred: "<count> <next slot> <flow>" a line,
-- for each flow of ARGV[6] whose jobs were sent to their slots here) (the daemon computes each job's id, the SHA-1 of its
-- member; id is the producer's id it was scheduled under, "" for none) where next_due is the earliest score left in the queue
-- ("" when it is empty), lease is the attempts value written (outcomes must present
-- it), stale lists the 1-based numbers of the outcome groups whose lease was no longer
-- held, space-separated (a late outcome: the job was already taken back, so it changed
-- nothing; writing a batch twice after a lost reply is harmless for the same reason),
-- and dropped lists the jobs set aside here, one a line, control characters replaced:
-- "skip <id> <field> <key>" for a skip condition that held, "oversize <id> <bytes>" for
-- a member over maxJobBytes (recorded in the failed list with a printable prefix, never
-- sent to the daemon, so a huge member costs it no memory), "unreadable <id> <error>"
-- for a skip key this script may not read (recorded in the failed list).
--
-- The first due time survives every put-back: a retry, a release (a first attempt
-- released keeps "0:<first due> @<score>" unless the score it goes back at is its first
-- due time anyway), an expired lease, and unclaim.lua. A score below 0 (-inf included)
-- counts as 0, the Unix epoch, for the first due time and in failure records.
--
-- One member is one job. A copy a producer adds while the job is in flight:
-- - is merged into the attempt under way (removed from the queue) when a claim finds it
--   due, before any other check: a set-aside never touches an attempt in flight;
-- - when the attempt's outcome is written and the copy is due by then (it fell due
--   during the attempt), is merged too: `done` and `fail` remove it, `retry` and
--   `release` move it to the score they write. A copy due later is left alone: `done`
--   and `fail` leave it as a job of its own (attempt 1), `retry` and `release` keep
--   its score and the count (the retry merges into it).
--
-- A new job starts at attempt 1. A job waiting in the queue whose score is no longer
-- the one recorded in its "@<score>" was written by a producer meanwhile: cancelled
-- (ZREM) and added again, or rescheduled with ZADD XX. The two cannot be told apart
-- (a sorted set keeps nothing but the score), so both start afresh: attempt 1, first due
-- time the new score. A producer's re-add at exactly the recorded score keeps the count.
--
-- Skip conditions (`skipIfExists`, `skipIfMissing` in the member) name keys that are not
-- in KEYS: on Redis Cluster they must share the queue's hash tag, so that they live in
-- the same slot, and under an ACL the user must be allowed to read them. A key that
-- cannot be read sets that one job aside; it never fails the claim. Only members that
-- contain the bytes "skipIf (a quote, then skipIf) are decoded, so other jobs cost
-- nothing extra; cjson then reads every spelling JSON allows. A member without those
-- bytes whose key is spelled with escapes ("\u0073kipIfExists") is not checked here:
-- the daemon (src/job/format.rs) applies the same byte test and sets such a member
-- aside as malformed, so a skip condition is never accepted and left unchecked.
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

-- The attempt count, first due time and recorded queue score of an attempts-hash
-- value; anything unreadable counts as no attempt. "<n>" (older daemons) has no first
-- due time, a leased value no recorded score.
local function parse_attempts(value)
  if not value then
    return 0, nil, nil
  end
  local n, first, rest = string.match(value, '^(%d+):([^ ]+)(.*)$')
  if n then
    return tonumber(n), first, string.match(rest, '^ @(%S+)$')
  end
  return tonumber(string.match(value, '^%d+')) or 0, nil, nil
end

-- The attempts value of a job left waiting in the queue at `score` after `n` attempts.
local function waiting(n, first, score)
  return n .. ':' .. first .. ' @' .. score
end

-- A score as a first due time: below 0 (-inf included) counts as 0, the epoch, so
-- that the header, the records and cjson (which refuses to encode inf) stay sane.
-- Returns the text and the number.
local function sane(score)
  local n = tonumber(score)
  if not n or n < 0 then
    return '0', 0
  end
  return score, n
end

local function printable(text)
  return (string.gsub(text, '%c', '?'))
end

-- At most the first `limit` bytes of `text`, as valid UTF-8 for the failed record:
-- cut before a character the limit would split, a byte that is not part of a UTF-8
-- character and every control character replaced by '?'.
local function printable_prefix(text, limit)
  local out, i, len = {}, 1, math.min(#text, limit)
  while i <= len do
    local b = string.byte(text, i)
    -- continuation bytes after the lead byte, and the range of the first of them
    local need, lo, hi = -1, 0x80, 0xBF
    if b < 0x80 then
      need = 0
    elseif b >= 0xC2 and b <= 0xDF then
      need = 1
    elseif b == 0xE0 then
      need, lo = 2, 0xA0
    elseif b == 0xED then
      need, hi = 2, 0x9F
    elseif b >= 0xE1 and b <= 0xEF then
      need = 2
    elseif b == 0xF0 then
      need, lo = 3, 0x90
    elseif b >= 0xF1 and b <= 0xF3 then
      need = 3
    elseif b == 0xF4 then
      need, hi = 3, 0x8F
    end
    if need > 0 and i + need > len then
      break -- the limit (or the text's end) cuts this character
    end
    local ok = need >= 0
    for k = 1, math.max(need, 0) do
      local c = string.byte(text, i + k)
      if c < (k == 1 and lo or 0x80) or c > (k == 1 and hi or 0xBF) then
        ok = false
        break
      end
    end
    if ok then
      out[#out + 1] = string.sub(text, i, i + need)
      i = i + need + 1
    else
      out[#out + 1] = '?'
      i = i + 1
    end
  end
  return printable(table.concat(out))
end

-- Runs `cmd key args...` over a flat list of arguments, in slices small enough for
-- unpack (Lua's C stack) and kept even for field-value pairs. One command per slice
-- instead of one per job: the per-call cost dominated this script.
local SLICE = 2000
local function batched(cmd, key, args)
  for i = 1, #args, SLICE do
    redis.call(cmd, key, unpack(args, i, math.min(i + SLICE - 1, #args)))
  end
end

-- `cmd key fields...` for a command that answers one value per field, in slices.
local function per_field(cmd, key, fields)
  local values = {}
  for i = 1, #fields, SLICE do
    local got = redis.call(cmd, key, unpack(fields, i, math.min(i + SLICE - 1, #fields)))
    for j = 1, #got do
      values[i + j - 1] = got[j]
    end
  end
  return values
end

local function hmget(key, fields)
  return per_field('HMGET', key, fields)
end

-- The scores of `members` in a sorted set (false where absent): one ZMSCORE per slice,
-- or on Redis before 6.2, which has no ZMSCORE, one ZSCORE per member.
local function zscores(key, members)
  local values = {}
  for i = 1, #members, SLICE do
    local got = redis.pcall('ZMSCORE', key, unpack(members, i, math.min(i + SLICE - 1, #members)))
    if type(got) == 'table' and got.err then
      for j, m in ipairs(members) do
        values[j] = redis.call('ZSCORE', key, m)
      end
      return values
    end
    for j = 1, #got do
      values[i + j - 1] = got[j]
    end
  end
  return values
end

-- Whether any job of this shard lives under a producer's id: the index then holds more
-- than its counter ("seq"). Without one, a queue fed the old way pays one HLEN, not the
-- index reads.
local indexed = KEYS[5] ~= nil and redis.call('HLEN', KEYS[5]) > 1

-- The ids of `members` (false where none), one HMGET.
local function ids_of(members)
  if not indexed then
    return {}
  end
  return hmget(KEYS[5], id_fields(members))
end

-- The outcomes first: a job that finished frees its slot before the claim counts it.
local stale = {}
local outcome_members = {}
for i = 7, #ARGV, 4 do
  outcome_members[#outcome_members + 1] = ARGV[i + 1]
end
local leases_now = hmget(KEYS[3], outcome_members)
local queued = zscores(KEYS[1], outcome_members)
local outcome_ids = ids_of(outcome_members)
local forget, landed, copies, unindex = {}, {}, {}, {}
for g = 1, #outcome_members do
  local i = 3 + 4 * g
  local op, m, held, arg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if leases_now[g] ~= held then
    stale[#stale + 1] = g
  else
    local id, kind, moved_to, replacement = outcome_ids[g], nil, nil, nil
    if id then
      kind, moved_to, replacement = next_of(KEYS[5], id)
    end
    local parked_at, park_due, park_flow
    if op == 'park' then
      parked_at, park_due, park_flow = string.match(arg, '^(%S+) (%S+) (.+)$')
      op, arg = 'release', parked_at
    end
    if (op == 'retry' or op == 'release') and ended_by_producer(kind) then
      op = 'drop' -- cancelled or replaced during the attempt: no retry
    end
    local n, first = parse_attempts(held)
    first = first or nows
    -- A copy a producer added during the attempt: due by now, it has merged into
    -- this attempt; due later, it is a delivery of its own.
    local copy = queued[g]
    local copy_merged = copy and tonumber(copy) <= now
    if op == 'done' or op == 'fail' or op == 'drop' then
      if op == 'fail' then
        redis.call('RPUSH', KEYS[4], arg)
      end
      if copy_merged then
        copies[#copies + 1] = m
      end
      forget[#forget + 1] = m
      if id then
        job_ends(KEYS[1], KEYS[5], id, m, kind, moved_to, replacement, unindex)
      end
    elseif op == 'retry' or op == 'release' then
      local score, left = copy, n
      if op == 'release' then
        left = n - 1
      end
      if not copy or copy_merged then
        if kind == 'move' then
          score = moved_to -- the producer moved it during the attempt
        elseif op == 'retry' then
          score = string.format('%.6f', now + tonumber(arg) / 1000)
        else
          score = arg
        end
        redis.call('ZADD', KEYS[1], score, m)
        if park_flow and score == parked_at then
          redis.call('ZADD', KEYS[1] .. ':parked:' .. park_flow, park_due, m)
          if id then
            -- So that ids.lua can take it out of the parked set when it is moved.
            redis.call('HSET', KEYS[5], 'parked:' .. id, park_flow)
          end
        end
      end
      if left <= 0 and tonumber(score) == tonumber(first) then
        forget[#forget + 1] = m -- nothing to remember: no attempt, first due = score
      else
        redis.call('HSET', KEYS[3], m, waiting(math.max(left, 0), first, score))
      end
      if kind == 'move' then
        unindex[#unindex + 1] = 'next:' .. id
      end
    else
      return redis.error_reply('claim.lua: unknown outcome ' .. tostring(op))
    end
    landed[#landed + 1] = m
  end
end
batched('HDEL', KEYS[3], forget)
batched('ZREM', KEYS[1], copies)
batched('ZREM', KEYS[2], landed)
batched('HDEL', KEYS[5], unindex)

-- Leases that ran out: the daemon holding them died or lost Redis mid-delivery.
-- They are due again at once; the cut attempt stays counted.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', nows, 'LIMIT', 0, tonumber(ARGV[4]))
unindex = {}
for _, m in ipairs(expired) do
  local id, kind, moved_to, replacement = indexed and redis.call('HGET', KEYS[5], 'job:' .. m), nil, nil, nil
  if id then
    kind, moved_to, replacement = next_of(KEYS[5], id)
  end
  if ended_by_producer(kind) then
    -- Cancelled or replaced by its producer during the cut attempt: not tried again.
    job_ends(KEYS[1], KEYS[5], id, m, kind, moved_to, replacement, unindex)
    redis.call('HDEL', KEYS[3], m)
  else
    local score = redis.call('ZSCORE', KEYS[1], m)
    if kind == 'move' then
      score = moved_to
      redis.call('ZADD', KEYS[1], score, m)
      unindex[#unindex + 1] = 'next:' .. id
    elseif not score then
      score = nows
      redis.call('ZADD', KEYS[1], score, m)
    end
    local n, first = parse_attempts(redis.call('HGET', KEYS[3], m))
    redis.call('HSET', KEYS[3], m, waiting(n, first or nows, score))
  end
  redis.call('ZREM', KEYS[2], m)
end
batched('HDEL', KEYS[5], unindex)
unindex = {}

-- The skip condition of a member that holds, as "skipIfExists <key>"; or nil and, when
-- the key may not be read here, why. A member with both conditions, or with one that
-- is not a key name, is left to the daemon, which sets it aside as malformed.
local function skip_reason(m)
  if not string.find(m, '"skipIf', 1, true) then
    return nil
  end
  local ok, job = pcall(cjson.decode, m)
  if not ok or type(job) ~= 'table' then
    return nil
  end
  local exists, missing = job.skipIfExists, job.skipIfMissing
  if exists ~= nil and missing ~= nil then
    return nil
  end
  local field, key, holds_when = 'skipIfExists', exists, 1
  if missing ~= nil then
    field, key, holds_when = 'skipIfMissing', missing, 0
  end
  if type(key) ~= 'string' or key == '' then
    return nil
  end
  local found = redis.pcall('EXISTS', key)
  if type(found) == 'table' and found.err then
    return nil, field .. ' ' .. key .. ' cannot be read: ' .. found.err
  end
  if found == holds_when then
    return field .. ' ' .. key
  end
  return nil
end

-- Moves a member that is not in flight out of the queue into the failed list, as the
-- daemon does with a malformed job; `record` holds what is known of it.
local function set_aside(m, record, id)
  record.Id = redis.sha1hex(m)
  record.attempts = 0
  record.failedAt = now
  redis.call('RPUSH', KEYS[4], cjson.encode(record))
  redis.call('HDEL', KEYS[3], m)
  redis.call('ZREM', KEYS[1], m)
  if id then
    job_ends(KEYS[1], KEYS[5], id, m, nil, nil, nil, unindex)
  end
  return record.Id
end

-- The flows with no room, by name, and the names to look for in a member.
local full, full_names = {}, {}
for line in string.gmatch(ARGV[6] or '', '[^\n]+') do
  local slot, spacing, name = string.match(line, '^(%S+) (%S+) (.+)$')
  if name then
    full[name] = {slot = tonumber(slot), spacing = tonumber(spacing), count = 0}
    full_names[#full_names + 1] = name
  end
end

-- A member's flow as the daemon names it (dispatch/flow.rs: its flowKey, else the
-- callback's host, lowercased, with the port unless it is the scheme's), when it is
-- one of the full flows; nil otherwise. Only a member that contains one of their names
-- is decoded. A URL the daemon would read differently (it normalises more) is merely
-- not deferred here: the daemon defers it.
local function full_flow_of(m)
  local hit = false
  for _, name in ipairs(full_names) do
    if string.find(m, name, 1, true) then
      hit = true
      break
    end
  end
  if not hit then
    return nil
  end
  local ok, job = pcall(cjson.decode, m)
  if not ok or type(job) ~= 'table' then
    return nil
  end
  if job.flowKey ~= nil then
    return type(job.flowKey) == 'string' and full[job.flowKey] or nil
  end
  if type(job.callback) ~= 'string' then
    return nil
  end
  local scheme, rest = string.match(job.callback, '^(%a[%w+.-]*)://(.*)$')
  if not scheme then
    return nil
  end
  scheme = string.lower(scheme)
  local authority = string.lower(string.match(string.match(rest, '^[^/?#\\]*'), '([^@]*)$'))
  local host, port = string.match(authority, '^(.-):(%d+)$')
  if not host then
    return full[authority]
  end
  port = tonumber(port)
  if (scheme == 'http' and port == 80) or (scheme == 'https' and port == 443) then
    return full[host]
  end
  return full[host .. ':' .. port]
end

local out = {nows, '', #expired, 0, '', table.concat(stale, ' '), ''}
local dropped = {}
local max_bytes = tonumber(ARGV[5])
local limit = tonumber(ARGV[1])
local due, recent_end, recent_cap = nil, 0, limit
if #full_names > 0 and limit > 0 then
  -- While a flow is full its backlog may sit in front of everything due after it.
  -- Jobs that fell due within the last second go first, the latest first (up to half
  -- the room), so that other hosts' jobs, and the full flow's jobs back at their
  -- slots, are claimed on time while the backlog is spread, even one that fell due
  -- all at once within that second; then the oldest, in due order, with up to 1000
  -- more looked at for the full flows. A job not claimed within its second is among
  -- the oldest after it.
  local split = string.format('%.6f', now - 1)
  due = redis.call('ZREVRANGEBYSCORE', KEYS[1], nows, '(' .. split, 'WITHSCORES', 'LIMIT', 0, limit)
  recent_end = #due
  recent_cap = math.ceil(limit / 2)
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', split, 'WITHSCORES', 'LIMIT', 0, limit + 1000)
  for i = 1, #old do
    due[#due + 1] = old[i]
  end
else
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows, 'WITHSCORES', 'LIMIT', 0, limit)
end
local deadline = string.format('%.6f', now + lease)
local due_members = {}
for i = 1, #due, 2 do
  due_members[#due_members + 1] = due[i]
end
local counts = hmget(KEYS[3], due_members)
local due_ids = ids_of(due_members)
local leases, in_flight, taken, slotted, slotted_counts = {}, {}, {}, {}, {}
local claimed = 0
for i = 1, #due, 2 do
  local m, score = due[i], due[i + 1]
  local id = due_ids[(i + 1) / 2]
  local flow = #full_names > 0 and not counts[(i + 1) / 2] and #m <= max_bytes and full_flow_of(m)
  if flow and not redis.call('ZSCORE', KEYS[2], m) then
    -- Its flow has no room: to the flow's next slot, first due time kept.
    local slot = string.format('%.6f', math.max(flow.slot, now))
    flow.slot = tonumber(slot) + flow.spacing
    flow.count = flow.count + 1
    slotted[#slotted + 1] = slot
    slotted[#slotted + 1] = m
    slotted_counts[#slotted_counts + 1] = m
    slotted_counts[#slotted_counts + 1] = waiting(0, (sane(score)), slot)
  elseif claimed >= limit or (i <= recent_end and claimed >= recent_cap) then
    -- Looked at only for the full flows, or beyond the recent jobs' half of the
    -- room: left for the next call.
  elseif redis.call('ZSCORE', KEYS[2], m) then
    -- The same member was added again while its job is in flight: one member is one
    -- job (PROTOCOL §1), so this copy merges into the attempt under way. Checked
    -- first: setting the copy aside would drop the running attempt's lease.
    taken[#taken + 1] = m
    out[4] = out[4] + 1
  elseif #m > max_bytes then
    local id = set_aside(m, {
      dueAt = select(2, sane(score)), memberBytes = #m, memberPrefix = printable_prefix(m, 200),
      error = 'malformed job: the member is ' .. #m .. ' bytes, over maxJobBytes (' .. max_bytes .. ')',
    }, id)
    dropped[#dropped + 1] = 'oversize ' .. id .. ' ' .. #m
  else
    local skip, unreadable = skip_reason(m)
    if unreadable then
      local id = set_aside(m, {
        dueAt = select(2, sane(score)), member = m,
        error = 'malformed job: ' .. unreadable .. ' (on Redis Cluster the key must share the queue\'s hash tag)',
      }, id)
      dropped[#dropped + 1] = 'unreadable ' .. id .. ' ' .. printable(unreadable)
    elseif skip then
      redis.call('HDEL', KEYS[3], m)
      redis.call('ZREM', KEYS[1], m)
      if id then
        job_ends(KEYS[1], KEYS[5], id, m, nil, nil, nil, unindex)
      end
      dropped[#dropped + 1] = 'skip ' .. redis.sha1hex(m) .. ' ' .. printable(skip)
    else
      local n, first, at = parse_attempts(counts[(i + 1) / 2])
      if at and tonumber(at) ~= tonumber(score) then
        -- Its score moved since this script queued it: a producer added it again
        -- (or rescheduled it), so it is a new job.
        n, first = 0, nil
      end
      first = first or sane(score)
      local lease = (n + 1) .. ':' .. first .. ' ' .. ARGV[3] .. '.' .. ((i + 1) / 2)
      claimed = claimed + 1
      leases[#leases + 1] = m
      leases[#leases + 1] = lease
      in_flight[#in_flight + 1] = deadline
      in_flight[#in_flight + 1] = m
      taken[#taken + 1] = m
      out[#out + 1] = m
      out[#out + 1] = score
      out[#out + 1] = n + 1
      out[#out + 1] = lease
      out[#out + 1] = first
      out[#out + 1] = id or ''
    end
  end
end
batched('HSET', KEYS[3], leases)
batched('ZADD', KEYS[2], in_flight)
batched('ZREM', KEYS[1], taken)
batched('HDEL', KEYS[5], unindex)
batched('ZADD', KEYS[1], slotted)
batched('HSET', KEYS[3], slotted_counts)

local deferred = {}
for _, name in ipairs(full_names) do
  local f = full[name]
  if f.count > 0 then
    deferred[#deferred + 1] = f.count .. ' ' .. string.format('%.6f', f.slot) .. ' ' .. name
  end
end
out[7] = table.concat(deferred, '\n')
out[5] = table.concat(dropped, '\n')
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[2] = first[2]
end
return out
