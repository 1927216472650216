-- One step of retrying or purging records of the failed list, atomically with respect
-- to every daemon. A step takes up to ARGV[2] records off the head of the list, acts
-- on the chosen ones and puts the others back at the tail, in their order. The admin
-- command (src/cli/admin.rs) runs steps until it has gone through as many records as
-- the list held when it began, so that the list ends in its old order, and no step
-- holds Redis for long whatever the list's length (the old single pass over 300,000
-- records held it for seconds). Only the ends of a list are cheap to change: removing
-- a record from the middle (LREM) costs a scan up to it.
--
-- KEYS[1] queue, KEYS[2] attempts, KEYS[3] failed list, KEYS[4] inflight, KEYS[5] the id
-- index (ids.lua): a job scheduled by id is retried under its id again, unless another
-- job lives under that id by now (then it is retried as a job without an id); left out
-- for a user whose ACL does not allow it
-- ARGV[1] "retry": the record's original member goes back into the queue, due now,
--         with its attempt count reset; a malformed job's record (its error starts
--         "malformed job") is kept unless chosen by id, since it would fail again at
--         once; "retry-malformed": the same, malformed ones included; or "purge":
--         the record is dropped
-- ARGV[2] how many records this step takes from the head (fewer if the list is shorter)
-- ARGV[3] which records: "all", "ids" (ARGV[4..] = job ids, the records' `Id`), or
--         "picked" (ARGV[4..] = SHA-1 hex of whole records: those the command's filter
--         kept when it read this step's records just before; a record changed or put
--         there since is not among them, and is kept)
-- Returns {taken, id1, what1, id2, what2, ...}: taken is how many records the step went
-- through, what is "retried", "purged", or why not.
--
-- Interrupted between two steps (Ctrl-C, a lost connection), the command leaves every
-- record in the list once, except the retried and purged ones: a retried record leaves
-- the list in the same step that puts its member back in the queue, so nothing is lost
-- and nothing doubled. The records already gone through are then at the tail, after
-- those not yet reached (each part in its order); running the command again finishes
-- it. Records the daemons add while it runs land among the ones it puts back.
-- Writes that add (ZADD, RPUSH) come before the LTRIM that removes the step's records
-- from the head, so a step that fails halfway (Redis out of memory) can leave a record
-- twice, never lose one.

pcall(redis.replicate_commands)
local op, step, which = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local nows = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)

local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end

local records = redis.call('LRANGE', KEYS[3], 0, step - 1)
local out, keep = {tostring(#records)}, {}
for _, raw in ipairs(records) do
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' then r = {} end
  local id = type(r.Id) == 'string' and r.Id or ''
  local chosen = which == 'all'
    or (which == 'ids' and wanted[id])
    or (which == 'picked' and wanted[redis.sha1hex(raw)])
  if not chosen then
    keep[#keep + 1] = raw
  elseif op == 'purge' then
    out[#out + 1] = id
    out[#out + 1] = 'purged'
  elseif op == 'retry' and which ~= 'ids' and type(r.error) == 'string'
      and string.sub(r.error, 1, 13) == 'malformed job' then
    keep[#keep + 1] = raw
    out[#out + 1] = id
    out[#out + 1] = 'kept: malformed, it would fail again at once; fix the job, or retry it by id or with --malformed'
  elseif type(r.member) ~= 'string' then
    keep[#keep + 1] = raw
    out[#out + 1] = id
    if type(r.memberPrefix) == 'string' then
      out[#out + 1] = 'kept: the record holds only the start of the member, which was over maxJobBytes; re-add the job by hand'
    else
      out[#out + 1] = 'kept: the record has no `member` (written by the old daemon); re-add the job by hand'
    end
  else
    redis.call('ZADD', KEYS[1], nows, r.member)
    -- A member that is in flight again (re-added meanwhile) keeps its lease; this
    -- copy merges into that attempt.
    if not redis.call('ZSCORE', KEYS[4], r.member) then
      redis.call('HDEL', KEYS[2], r.member)
    end
    local what = 'retried'
    local by = type(r.delayqs) == 'table' and r.delayqs.id
    if type(by) == 'string' and KEYS[5] then
      local now_under = redis.call('HGET', KEYS[5], 'id:' .. by)
      local lives = now_under and (redis.call('ZSCORE', KEYS[1], now_under)
        or redis.call('ZSCORE', KEYS[4], now_under))
      if not lives or now_under == r.member then
        redis.call('HSET', KEYS[5], 'id:' .. by, r.member, 'job:' .. r.member, by)
      else
        what = 'retried without its id ' .. by .. ': another job lives under it'
      end
    end
    out[#out + 1] = id
    out[#out + 1] = what
  end
end

-- The records kept go to the tail first, then the step's records leave the head.
for i = 1, #keep, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(keep, i, math.min(i + 999, #keep)))
end
if #records > 0 then
  redis.call('LTRIM', KEYS[3], #records, -1)
end
return out
