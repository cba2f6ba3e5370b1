-- The best `limit` due jobs of the queue, not taken: {score, member, ...} (a claim across
-- several queues compares these, then claims from each queue its share).
-- ARGV[4] = limit, ARGV[5] = now.
if paused() then
  return {}
end
local limit = tonumber(ARGV[4])
promote(ARGV[5])
return redis.call('ZRANGE', K_READY, 0, limit - 1, 'WITHSCORES')
