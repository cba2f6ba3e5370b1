-- The best `limit` due jobs of the queue, not taken: {member, score, ...} (a claim across
-- several queues compares these, then claims from each queue its share).
-- ARGV[4] = limit, ARGV[5] = now ('' = the store's clock).
if paused() then
  return {}
end
local limit = tonumber(ARGV[4])
promote(clock(ARGV[5]))
return redis.call('ZRANGE', K_READY, 0, limit - 1, 'WITHSCORES')
