-- The producer-id index (see ids.lua) as the daemon's scripts keep it true: prepended to
-- claim.lua and unclaim.lua at build time (src/store/connection.rs). A job scheduled
-- under an id has "job:<member>" -> id in the index; while its attempt is in flight,
-- "next:<id>" may say what the producer asked for meanwhile. It applies when the
-- attempt ends, or when the job comes back without one (a release, an expired lease, a
-- lost claim): "cancel" and "schedule" end this job (no retry), "move" puts its retry,
-- or its untried attempt, at the given score.

-- What follows the attempt of `id`: kind ("cancel", "move", "schedule" or nil), score,
-- and the member a "schedule" queues.
local function next_of(index, id)
  local value = redis.call('HGET', index, 'next:' .. id)
  if not value then
    return nil
  end
  return string.match(value, '^(%a+) ?(%S*) ?(.*)$')
end

-- A job coming back to the queue whose producer cancelled or replaced it meanwhile
-- ends instead.
local function ended_by_producer(kind)
  return kind == 'cancel' or kind == 'schedule'
end

-- The job `m` of `id` ends (delivered, failed, dropped, set aside, cancelled or
-- replaced). A job scheduled meanwhile is queued now, before anything is removed; the
-- index fields of `m` to delete are appended to `fields`, for the caller to delete once
-- `m` is out of its sets.
local function job_ends(queue, index, id, m, kind, score, member, fields)
  if kind == 'schedule' then
    redis.call('ZADD', queue, score, member)
    redis.call('HSET', index, 'id:' .. id, member, 'job:' .. member, id)
    fields[#fields + 1] = 'parked:' .. id
  elseif redis.call('HGET', index, 'id:' .. id) == m then
    fields[#fields + 1] = 'id:' .. id
    fields[#fields + 1] = 'parked:' .. id
  end
  fields[#fields + 1] = 'job:' .. m
  fields[#fields + 1] = 'next:' .. id
end

-- The index fields that name each member's id, for one HMGET.
local function id_fields(members)
  local fields = {}
  for i, m in ipairs(members) do
    fields[i] = 'job:' .. m
  end
  return fields
end
