-- Retry or purge records of the failed list, atomically with respect to every daemon.
--
-- KEYS[1] queue, KEYS[2] attempts, KEYS[3] failed list, KEYS[4] inflight
-- ARGV[1] "retry": the record's original member goes back into the queue, due now,
--         with its attempt count reset; or "purge": the record is dropped
-- ARGV[2] which records: "all", "older" (ARGV[3] = Unix seconds: failed before it),
--         or "ids" (ARGV[3..] = job ids, the records' `Id`)
-- Returns {id1, what1, id2, what2, ...}: what is "retried", "purged", or why not.
--
-- The list is rewritten in one pass (DEL, then the records that stay, in order)
-- rather than with LREM per record, which would be quadratic on a long list.

pcall(redis.replicate_commands)
local op, which = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local nows = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)

local wanted = {}
if which == 'ids' then
  for i = 3, #ARGV do wanted[ARGV[i]] = true end
end
local cutoff = tonumber(ARGV[3])

local out, keep, changed = {}, {}, false
for _, raw in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' then r = {} end
  local id = type(r.Id) == 'string' and r.Id or ''
  local chosen = which == 'all'
    or (which == 'ids' and wanted[id])
    or (which == 'older' and type(r.failedAt) == 'number' and r.failedAt < cutoff)
  if not chosen then
    keep[#keep + 1] = raw
  elseif op == 'purge' then
    out[#out + 1] = id
    out[#out + 1] = 'purged'
    changed = true
  elseif type(r.member) ~= 'string' then
    keep[#keep + 1] = raw
    out[#out + 1] = id
    out[#out + 1] = 'kept: the record has no `member` (written by the old daemon); re-add the job by hand'
  else
    redis.call('ZADD', KEYS[1], nows, r.member)
    -- A member that is in flight again (re-added meanwhile) keeps its lease; this
    -- copy merges into that attempt when it is claimed.
    if not redis.call('ZSCORE', KEYS[4], r.member) then
      redis.call('HDEL', KEYS[2], r.member)
    end
    out[#out + 1] = id
    out[#out + 1] = 'retried'
    changed = true
  end
end

if changed then
  redis.call('DEL', KEYS[3])
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(keep, i, math.min(i + 999, #keep)))
  end
end
return out
