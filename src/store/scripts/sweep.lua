-- Drop bookkeeping of jobs that no longer exist, one HSCAN page per call, so Redis is
-- never held long: attempt counts of jobs a producer cancelled (ZREM) while they waited
-- for a retry, and, in the id index, the entries of a job scheduled by id that a
-- producer removed with a plain ZREM instead of the cancel function (see ids.lua).
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts, KEYS[4] index (see claim.lua)
-- ARGV[1] HSCAN cursor, ARGV[2] page size, ARGV[3] "index" to go through the index,
-- else the attempts hash
-- Returns {next cursor, entries removed}

pcall(redis.replicate_commands)
local function gone(m)
  return not redis.call('ZSCORE', KEYS[1], m) and not redis.call('ZSCORE', KEYS[2], m)
end

local removed = 0
if ARGV[3] == 'index' then
  local page = redis.call('HSCAN', KEYS[4], ARGV[1], 'COUNT', tonumber(ARGV[2]))
  local fields = page[2]
  for i = 1, #fields, 2 do
    local field, value = fields[i], fields[i + 1]
    -- "id:<id>" names a member that is in one of the sets while its job lives, and
    -- "job:<member>" is that member; "next:<id>", "parked:<id>" and "seq" go with them.
    local m = string.match(field, '^job:(.*)$')
    local id = string.match(field, '^id:(.*)$')
    local after = string.match(field, '^next:(.*)$') or string.match(field, '^parked:(.*)$')
    if (m and gone(m)) or (id and gone(value))
        or (after and redis.call('HEXISTS', KEYS[4], 'id:' .. after) == 0) then
      redis.call('HDEL', KEYS[4], field)
      removed = removed + 1
    end
  end
  return {page[1], removed}
end
local page = redis.call('HSCAN', KEYS[3], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local fields = page[2]
for i = 1, #fields, 2 do
  local m = fields[i]
  if gone(m) then
    redis.call('HDEL', KEYS[3], m)
    removed = removed + 1
  end
end
return {page[1], removed}
