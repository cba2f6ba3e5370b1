-- Extend the leases of the worker's jobs. ARGV[4] = worker id, ARGV[5] = now ('' = the
-- store's clock), ARGV[6] = lease seconds, ARGV[7..] = job ids.
-- Returns {id, cancel requested (0/1), ...} for the jobs it still holds.
local worker = ARGV[4]
local lease = later(clock(ARGV[5]), ARGV[6])
local out = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'cancel_requested')
  if f[1] == 'active' and f[2] == worker then
    redis.call('HSET', key, 'lease_expires_at', lease)
    redis.call('ZADD', K_ACTIVE, lease, id)
    out[#out + 1] = id
    out[#out + 1] = tonumber(f[3])
  end
end
return out
