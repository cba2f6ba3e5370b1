-- Give the worker's jobs back unrun (graceful shutdown): the attempt does not count; a job
-- whose cancel was requested ends cancelled. ARGV[4] = worker id, ARGV[5] = now,
-- ARGV[6..] = job ids.
local worker, now = ARGV[4], ARGV[5]
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'cancel_requested')
  if f[1] == 'active' and f[2] == worker then
    redis.call('HINCRBY', key, 'attempt', -1)
    redis.call('HDEL', key, 'started_at', 'worker_id')
    redis.call('HSET', key, 'run_at', now)
    if f[3] == '1' then
      finish(key, id, 'cancelled', now)
    else
      requeue(key, id, now, now)
    end
  end
end
wake()
return 0
