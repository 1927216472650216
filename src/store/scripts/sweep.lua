-- Drop attempt counts of jobs that no longer exist: a producer cancelled (ZREM) a job
-- while it waited for a retry. One HSCAN page per call, so Redis is never held long.
--
-- KEYS[1] queue, KEYS[2] inflight, KEYS[3] attempts (see claim.lua)
-- ARGV[1] HSCAN cursor, ARGV[2] page size
-- Returns {next cursor, entries removed}

pcall(redis.replicate_commands)
local page = redis.call('HSCAN', KEYS[3], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local removed = 0
local fields = page[2]
for i = 1, #fields, 2 do
  local m = fields[i]
  if not redis.call('ZSCORE', KEYS[1], m) and not redis.call('ZSCORE', KEYS[2], m) then
    redis.call('HDEL', KEYS[3], m)
    removed = removed + 1
  end
end
return {page[1], removed}
