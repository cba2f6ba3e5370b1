-- Take up to `limit` due jobs, best first: active, attempt + 1, leased to the worker.
-- ARGV[4] = limit, ARGV[5] = worker id, ARGV[6] = now ('' = the store's clock),
-- ARGV[7] = lease seconds. Returns the claimed job hashes (HGETALL form).
if paused() then
  return {}
end
local limit, worker, now = tonumber(ARGV[4]), ARGV[5], clock(ARGV[6])
local lease = later(now, ARGV[7])
promote(now)
local out = {}
for _, member in ipairs(redis.call('ZRANGE', K_READY, 0, limit - 1)) do
  redis.call('ZREM', K_READY, member)
  local id = id_of_member(member)
  local key = job_key(id)
  redis.call('HINCRBY', key, 'attempt', 1)
  redis.call('HSET', key, 'state', 'active', 'worker_id', worker, 'started_at', now,
    'lease_expires_at', lease)
  redis.call('ZADD', K_ACTIVE, lease, id)
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
