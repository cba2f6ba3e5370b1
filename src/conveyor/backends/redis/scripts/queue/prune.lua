-- Delete finished jobs older than their cut-off. ARGV[4] = completed before,
-- ARGV[5] = failed (and cancelled) before, ARGV[6] = at most this many per set.
-- Returns the deleted ids.
local limit = tonumber(ARGV[6])
local deleted = {}
for _, cut in ipairs({{K_COMPLETED, ARGV[4]}, {K_FAILED, ARGV[5]}, {K_CANCELLED, ARGV[5]}}) do
  local ids = redis.call('ZRANGEBYSCORE', cut[1], '-inf', '(' .. cut[2], 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('DEL', job_key(id))
    redis.call('ZREM', cut[1], id)
    redis.call('ZREM', K_ALL, id)
    deleted[#deleted + 1] = id
  end
end
return deleted
