-- Undo a claim whose reply never arrived (the connection failed mid-call): its jobs
-- were never handed to a worker, so they go back into the queue with their attempt
-- count as before. Without this they would wait for their lease to expire.
--
-- Where a job goes back: a first attempt at its first due time, which is the score it
-- was claimed at (or, for one put back before, such as by a host pause, an earlier
-- score: it is due at once either way, and keeps its place ahead of later jobs). A
-- later attempt at the current time: its lease value does not say which score it was
-- claimed at, and its first due time would put it ahead of jobs due long after it.
-- Either way the first due time is kept ("<n>:<first due> @<score>", see claim.lua).
-- A copy a producer added meanwhile keeps its score.
--
-- A job its producer cancelled or replaced by id meanwhile ends instead, and one it
-- moved goes back at the time it gave (ids_after.lua, prepended to this script).
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts, KEYS[4] index (see claim.lua; left
-- out when the user may not use it)
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
  local id = KEYS[4] and redis.call('HGET', KEYS[4], 'job:' .. m)
  local kind, moved_to, replacement
  if id then
    kind, moved_to, replacement = next_of(KEYS[4], id)
  end
  if a and string.find(a, mark, 1, true) and ended_by_producer(kind) then
    local fields = {}
    job_ends(KEYS[1], KEYS[4], id, m, kind, moved_to, replacement, fields)
    redis.call('HDEL', KEYS[3], m)
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[4], unpack(fields))
    released = released + 1
  elseif a and string.find(a, mark, 1, true) then
    local n = tonumber(string.match(a, '^%d+')) or 1
    local first = string.match(a, '^%d+:([^ ]+)') or nows
    local score = redis.call('ZSCORE', KEYS[1], m)
    if kind == 'move' then
      score = moved_to
      redis.call('ZADD', KEYS[1], score, m)
    elseif not score then
      score = nows
      if n <= 1 then
        score = first
      end
      redis.call('ZADD', KEYS[1], score, m)
    end
    if n <= 1 and tonumber(score) == tonumber(first) then
      redis.call('HDEL', KEYS[3], m) -- no attempt made, and the score is the first due
    else
      redis.call('HSET', KEYS[3], m, math.max(n - 1, 0) .. ':' .. first .. ' @' .. score)
    end
    redis.call('ZREM', KEYS[2], m)
    if kind == 'move' then
      redis.call('HDEL', KEYS[4], 'next:' .. id)
    end
    released = released + 1
  end
end
return released
