-- Delete at most `limit` finished jobs past their retention, oldest first per set.
-- ARGV[4] = now ('' = the store's clock), ARGV[5] = seconds completed jobs are kept,
-- ARGV[6] = seconds failed and cancelled jobs are kept, ARGV[7] = limit.
-- Returns the deleted ids.
local now, limit = tonumber(clock(ARGV[4])), tonumber(ARGV[7])
local deleted = {}
local cuts = {
  {K_COMPLETED, num(now - tonumber(ARGV[5]))},
  {K_FAILED, num(now - tonumber(ARGV[6]))},
  {K_CANCELLED, num(now - tonumber(ARGV[6]))},
}
for _, cut in ipairs(cuts) do
  if #deleted >= limit then
    break
  end
  local ids = redis.call('ZRANGEBYSCORE', cut[1], '-inf', '(' .. cut[2], 'LIMIT', 0,
    limit - #deleted)
  for _, id in ipairs(ids) do
    redis.call('DEL', job_key(id))
    redis.call('ZREM', cut[1], id)
    redis.call('ZREM', K_ALL, id)
    deleted[#deleted + 1] = id
  end
end
return deleted
