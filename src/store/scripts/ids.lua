-- Jobs by the producer's own id: schedule (upsert), move, cancel and read a job under
-- an id of the producer's choosing. This one file is both the plain script, for servers
-- without Functions (Redis 6, KeyDB, Dragonfly: EVAL/EVALSHA, the operation in ARGV[1]),
-- and the body of every function of the `delayqs` library (Redis 7+, Valkey), which
-- src/store/functions.rs wraps around it at build time.
--
-- KEYS[1] queue     the shard's `key` (sorted set), as claim.lua
-- KEYS[2] inflight  the shard's `inflightKey`
-- KEYS[3] attempts  the shard's `attemptsKey`
-- KEYS[4] index     "<KEYS[1]>:ids", a hash, in the queue's slot by its hash tag:
--                   "id:<id>"    -> the member now scheduled under <id>
--                   "job:<member>" -> its id (claim.lua reads it per batch, one HMGET)
--                   "next:<id>"  -> what follows the attempt in flight: "cancel",
--                                   "move <score>" or "schedule <score> <member>"
--                   "parked:<id>" -> the flow whose parked set ("<KEYS[1]>:parked:<flow>")
--                                   claim.lua last listed the id's job in; believed only
--                                   while the job is listed there at the score it was
--                                   parked at, as unpark.lua judges it
--                   "seq"        -> a counter that makes every scheduled member unique
-- The shard of an id: int(sha1(id)[0..8], 16) % shards, by the id, not the member, so
-- that every operation on one id finds the same shard.
--
-- ARGV[1] the operation; the rest as the operation says:
--   schedule <id> <job JSON> <due>  -> {status, job id, due}: status "added", "replaced"
--            (the pending job under <id> is replaced by this one), or "after-attempt"
--            (the id's attempt is in flight: this job is queued once it ends, whatever
--            its outcome, instead of any retry)
--   move <id> <due>                 -> {status, job id, due}: "moved" (attempts so far
--            kept), "after-attempt" (in flight: its retry, or the job scheduled after it,
--            goes at <due>), or "not-found"
--   cancel <id>                     -> {status, job id, ""}: "cancelled", "after-attempt"
--            (in flight: the attempt goes on, no retry and no replacement follow), or
--            "not-found"
--   state <id>                      -> nil when no job lives under <id>; otherwise
--            {"id", id, "state", "pending"|"retrying"|"parked"|"in-flight", "jobId",
--             sha1, "due", score ("" in flight; parked: the due time it is listed at,
--             not the day-ahead score it waits at), "attempts", attempts made (in
--             flight: counting the one under way), "after", "" | "cancel" |
--             "move <score>" | "schedule <score>", "member", the member string,
--             "flow", the paused flow of a parked job, else ""}
-- A parked job (its flow is paused, claim.lua's `park`) that is moved or replaced is no
-- longer parked: it waits at its new time like any job, and is parked again should its
-- flow still be paused then. Left listed, unpark.lua would put it back at its old due
-- time on resume, since a move leaves the recorded score equal to the queue's.
-- <due>: Unix seconds (a number, fractions honoured), or "+<seconds>" from now by
-- Redis's clock.
--
-- A scheduled member is the producer's JSON object with a field put first:
-- {"delayqs":{"id":<id>,"n":<seq>,"t":<Redis TIME, seconds.microseconds>}, ...}. So
-- two ids may carry the same JSON, and the job id (SHA-1 of the member, `webhook-id`)
-- differs for every delivery scheduled, while staying the same for all attempts of one
-- (a move keeps the member). The time is there because "seq" lives in the index: an
-- index lost (a restart without persistence, a DEL) starts it again at 1, and the same
-- id and JSON would then make the member, and the webhook-id, of an earlier delivery,
-- which receivers de-duplicate away.
--
-- Bad input (an id, a job, a due time) is refused with an error reply before anything
-- is written. Writes that add come before writes that remove, as in claim.lua.

pcall(redis.replicate_commands)

local op, id = ARGV[1], ARGV[2]
local queue, inflight, attempts, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function refuse(text)
  return redis.error_reply('ERR delayqs ' .. tostring(op) .. ': ' .. text)
end

if op ~= 'schedule' and op ~= 'move' and op ~= 'cancel' and op ~= 'state' then
  return redis.error_reply('ERR delayqs: unknown operation ' .. string.format('%q', tostring(op))
    .. ' (schedule, move, cancel or state)')
end
if #KEYS ~= 4 then
  return refuse('give 4 keys: the queue, inflightKey, attemptsKey and "<queue>:ids", got ' .. #KEYS)
end
if type(id) ~= 'string' or #id == 0 or #id > 200 or string.find(id, '[^\33-\126]') then
  return refuse('the id must be 1 to 200 printable ASCII characters without spaces, got '
    .. string.format('%q', string.sub(tostring(id), 1, 60)))
end

-- The due time as the score to write, or nil and why not.
local function due_time(text)
  text = tostring(text or '')
  local relative = string.sub(text, 1, 1) == '+'
  local n = tonumber(relative and string.sub(text, 2) or text)
  if not n or n ~= n or n == math.huge or n < 0 then
    return nil, refuse('the due time ' .. string.format('%q', string.sub(text, 1, 60))
      .. ' is not Unix seconds (a number, 0 or more) or +seconds from now')
  end
  if relative then
    local t = redis.call('TIME')
    n = n + tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  -- 1e11 s is the year 5138, and milliseconds since 1973: a producer who passed
  -- Date.now() or time.time() * 1000 would otherwise wait for ever without a word.
  if n > 1e11 then
    return nil, refuse('the due time ' .. string.format('%q', string.sub(text, 1, 60))
      .. ' is after the year 5000: Unix seconds are expected, not milliseconds')
  end
  return string.format('%.6f', n)
end

-- Where a member is: in flight wins over a copy in the queue, as in claim.lua.
local function where(m)
  if not m then
    return nil
  end
  if redis.call('ZSCORE', inflight, m) then
    return 'in-flight'
  end
  if redis.call('ZSCORE', queue, m) then
    return 'queued'
  end
  return nil
end

local current = redis.call('HGET', index, 'id:' .. id)
local state = where(current)
-- Only an attempt in flight has something to follow it.
local after = state == 'in-flight' and redis.call('HGET', index, 'next:' .. id) or nil

-- The parked set listing the id's job, the due time listed there and the flow, while
-- unpark.lua would still bring the job back from it (listed, waiting at the score it
-- was parked at); nil otherwise. The set is not in KEYS (named from KEYS[1], in its
-- slot, as claim.lua names it): a producer whose ACL does not allow it sees no job
-- parked, rather than an error.
local function parked()
  local flow = state == 'queued' and redis.call('HGET', index, 'parked:' .. id)
  if not flow then
    return nil
  end
  local key = queue .. ':parked:' .. flow
  local due = redis.pcall('ZSCORE', key, current)
  if type(due) == 'table' then
    return nil
  end
  local value = redis.call('HGET', attempts, current)
  local at = value and string.match(value, ' @(%S+)$')
  if due and at and tonumber(at) == tonumber(redis.call('ZSCORE', queue, current)) then
    return key, due, flow
  end
  return nil
end

-- The id's job leaves its flow's parked set, if it is in one.
local function unpark()
  local key = parked()
  if key then
    redis.pcall('ZREM', key, current)
  end
  redis.call('HDEL', index, 'parked:' .. id)
end

-- An entry whose job left without the scripts knowing (a producer's ZREM): forgotten
-- here, so that the id is free again.
local function forget_stale()
  if current and not state then
    redis.call('HDEL', index, 'id:' .. id, 'job:' .. current, 'next:' .. id, 'parked:' .. id)
  end
end

if op == 'state' then
  if not state then
    return false
  end
  local n, rest = 0, nil
  local value = redis.call('HGET', attempts, current)
  if value then
    n, rest = string.match(value, '^(%d+):[^ ]+ (.*)$')
    n = tonumber(n) or tonumber(string.match(value, '^%d+')) or 0
  end
  local shown, due = 'in-flight', ''
  local _, listed, flow = parked()
  if listed then
    shown, due = 'parked', listed
  elseif state == 'queued' then
    due = redis.call('ZSCORE', queue, current)
    local at = rest and string.match(rest, '^@(%S+)$')
    if n > 0 and at and tonumber(at) == tonumber(due) then
      shown = 'retrying'
    else
      shown, n = 'pending', 0
    end
  end
  local next_shown = after and string.match(after, '^(%a+ ?%S*)') or ''
  return {'id', id, 'state', shown, 'jobId', redis.sha1hex(current), 'due', due,
    'attempts', n, 'after', next_shown, 'member', current, 'flow', flow or ''}
end

if op == 'cancel' then
  if not state or after == 'cancel' then
    forget_stale()
    return {state and 'after-attempt' or 'not-found', current and state and redis.sha1hex(current) or '', ''}
  end
  local job = redis.sha1hex(current)
  if state == 'in-flight' then
    redis.call('HSET', index, 'next:' .. id, 'cancel')
    return {'after-attempt', job, ''}
  end
  unpark()
  redis.call('ZREM', queue, current)
  redis.call('HDEL', attempts, current)
  redis.call('HDEL', index, 'id:' .. id, 'job:' .. current, 'next:' .. id)
  return {'cancelled', job, ''}
end

if op == 'move' then
  local score, problem = due_time(ARGV[3])
  if not score then
    return problem
  end
  if not state or after == 'cancel' then
    forget_stale()
    return {'not-found', '', ''}
  end
  if state == 'in-flight' then
    local replacement = after and string.match(after, '^schedule %S+ (.*)$')
    if replacement then
      redis.call('HSET', index, 'next:' .. id, 'schedule ' .. score .. ' ' .. replacement)
      return {'after-attempt', redis.sha1hex(replacement), score}
    end
    redis.call('HSET', index, 'next:' .. id, 'move ' .. score)
    return {'after-attempt', redis.sha1hex(current), score}
  end
  redis.call('ZADD', queue, score, current)
  -- The same delivery at another time: its attempts so far and first due time stay,
  -- re-recorded at the new score, which claim.lua would otherwise read as a new job.
  local value = redis.call('HGET', attempts, current)
  local head = value and string.match(value, '^(%d+:[^ ]+) @%S+$')
  if head then
    redis.call('HSET', attempts, current, head .. ' @' .. score)
  end
  unpark()
  return {'moved', redis.sha1hex(current), score}
end

-- schedule
local job = ARGV[3]
local score, problem = due_time(ARGV[4])
if not score then
  return problem
end
if type(job) ~= 'string' or not string.find(job, '^%s*{') then
  return refuse('the job must be a JSON object, e.g. {"callback":"https://shop.example/close","body":{"order":42}}')
end
local ok, decoded = pcall(cjson.decode, job)
if not ok or type(decoded) ~= 'table' then
  return refuse('the job is not valid JSON: ' .. tostring(decoded))
end
-- JSON allows a tab, a line feed or a carriage return only between tokens, and no other
-- control character at all. cjson takes them inside strings; the daemon's parser does
-- not, and would set the job aside unsent when due.
local function raw_control(text)
  if string.find(text, '[%z\1-\8\11\12\14-\31]') then
    return true
  end
  local pos, inside = 1, false
  while true do
    local at = string.find(text, '["\\\t\n\r]', pos)
    if not at then
      return false
    end
    local c = string.sub(text, at, at)
    if c == '"' then
      inside = not inside
    elseif c == '\\' then
      at = at + 1 -- what it escapes
    elseif inside then
      return true
    end
    pos = at + 1
  end
end
if raw_control(job) then
  return refuse('the job is not valid JSON: it holds a control character unescaped (write \\n, \\t, \\u0001)')
end
local callback
for k, v in pairs(decoded) do
  if type(k) == 'string' and string.lower(k) == 'callback' then
    callback = v
  end
end
if type(callback) ~= 'string' or not (string.find(string.lower(callback), '^https?://[^/]')) then
  return refuse('the job needs a "callback": an http:// or https:// URL')
end
if string.find(callback, '[%s%c\\]') then
  return refuse('the job\'s "callback" is not a valid URL (a space, a control character or a backslash)')
end
if string.find(string.match(callback, '^%a+://([^/?#]*)'), '@', 1, true) then
  return refuse('the job\'s "callback" carries credentials (user:password@); put them elsewhere, they would be logged')
end
if decoded.delayqs ~= nil then
  return refuse('the job may not have a "delayqs" field: delayqs writes it (the id, a sequence number and the time)')
end

-- The job's options as the daemon reads them when the job falls due
-- (src/job/options.rs, src/job/format.rs): a job it would set aside as malformed then
-- is refused now, while the producer is there to read why. Two bounds are the daemon's
-- own settings and stay its checks: a "timeout" over its timeoutMs, a member over
-- maxJobBytes.
local function shown(v)
  local fine, text = pcall(cjson.encode, v)
  return string.sub(fine and text or tostring(v), 1, 60)
end
local function seconds(v, most)
  return type(v) == 'number' and v >= 0 and v <= most
end
local WEEK = 7 * 86400
local FORBIDDEN = {connection = true, ['keep-alive'] = true, te = true, trailer = true,
  ['transfer-encoding'] = true, upgrade = true, host = true, ['user-agent'] = true}
local CONTROL = '[%z\1-\8\10-\31\127]'

local function bad_option(o)
  local v = o.maxRetry
  if v ~= nil and not (seconds(v, 1000) and v == math.floor(v)) then
    return '"maxRetry" must be a whole number from 0 to 1000, got ' .. shown(v)
  end
  v = o.timeout
  if v ~= nil and not (seconds(v, 1e15) and v > 0) then
    return '"timeout" must be a positive number of seconds, got ' .. shown(v)
  end
  v = o.backoff
  if v ~= nil then
    local fine = seconds(v, WEEK)
    if type(v) == 'table' and #v >= 1 and #v <= 100 then
      fine = true
      for k, s in pairs(v) do
        fine = fine and type(k) == 'number' and seconds(s, WEEK)
      end
    end
    if not fine then
      return '"backoff" must be seconds: a number or a list of numbers, up to 7 days each, got ' .. shown(v)
    end
  end
  v = o.headers
  if v ~= nil then
    if type(v) ~= 'table' then
      return '"headers" must be an object of strings, got ' .. shown(v)
    end
    for name, value in pairs(v) do
      if type(name) ~= 'string' then
        return '"headers" must be an object of strings, got ' .. shown(v)
      end
      local lower = string.lower(name)
      if type(value) ~= 'string' then
        return '"headers": ' .. shown(name) .. ' must be a string'
      elseif name == '' or string.find(name, "[^%w!#%$%%&'%*%+%-%.%^_`|~]") then
        return '"headers": ' .. shown(name) .. ' is not a valid header name'
      elseif string.find(value, CONTROL) then
        return '"headers": ' .. shown(name) .. ' is not a valid header: its value holds a control character'
      elseif FORBIDDEN[lower] or string.find(lower, '^proxy%-') or string.find(lower, '^content%-')
          or string.find(lower, '^x%-delayqs%-') or string.find(lower, '^webhook%-')
          or string.find(lower, 'signature', 1, true) then
        return '"headers": ' .. shown(name) .. ' may not be set by a job'
      end
    end
  end
  if o.method ~= nil and o.method ~= 'POST' and o.method ~= 'PUT' then
    return '"method" must be "POST" or "PUT", got ' .. shown(o.method)
  end
  if o.contentType ~= nil and o.contentType ~= 'form' and o.contentType ~= 'json' then
    return '"contentType" must be "form" or "json", got ' .. shown(o.contentType)
  end
  local skip
  for _, field in ipairs({'skipIfExists', 'skipIfMissing'}) do
    v = o[field]
    if v ~= nil and skip then
      return '"' .. field .. '" cannot be combined with the other skip condition'
    elseif v ~= nil and (type(v) ~= 'string' or v == '') then
      return '"' .. field .. '" must be a Redis key name, got ' .. shown(v)
    elseif v ~= nil then
      skip = field
    end
  end
  -- claim.lua checks a skip condition only in a member holding these bytes.
  if skip and not string.find(job, '"skipIf', 1, true) then
    return '"' .. skip .. '" is spelled with JSON escapes (such as \\u0073): write the field name without them'
  end
  v = o.flowKey
  if v ~= nil and (type(v) ~= 'string' or #v < 1 or #v > 200 or string.find(v, '[%z\1-\31\127]')
      or string.find(v, '\194[\128-\159]')) then
    return '"flowKey" must be a name of 1 to 200 bytes without control characters, got ' .. shown(v)
  end
  local sign = o.sign
  for k, s in pairs(o) do
    if sign == nil and type(k) == 'string' and string.lower(k) == 'sign' then
      sign = s
    end
  end
  if sign ~= nil and sign ~= cjson.null and type(sign) ~= 'string' then
    return '"sign" must be a string, got ' .. shown(sign)
  end
  if o.contentType == 'json' and type(sign) == 'string' and string.find(sign, CONTROL) then
    return '"sign" holds a control character, which the X-Delayqs-Sign header of a "contentType": "json" job cannot carry'
  end
  return nil
end
local why = bad_option(decoded)
if why then
  return refuse('the job\'s ' .. why)
end

local seq = redis.call('HINCRBY', index, 'seq', 1)
local t = redis.call('TIME')
local rest = string.gsub(job, '^%s*{', '', 1)
local member = '{"delayqs":{"id":' .. cjson.encode(id) .. ',"n":' .. seq .. ',"t":' .. t[1] .. '.'
  .. string.format('%06d', tonumber(t[2])) .. '},' .. rest
local sha = redis.sha1hex(member)

if state == 'in-flight' then
  redis.call('HSET', index, 'next:' .. id, 'schedule ' .. score .. ' ' .. member)
  return {'after-attempt', sha, score}
end
redis.call('ZADD', queue, score, member)
redis.call('HSET', index, 'id:' .. id, member, 'job:' .. member, id)
if current then
  unpark()
  redis.call('ZREM', queue, current)
  redis.call('HDEL', attempts, current)
  redis.call('HDEL', index, 'job:' .. current)
end
return {state and 'replaced' or 'added', sha, score}
