-- Give the worker's unstarted jobs back (graceful shutdown): the attempt does not count; a
-- job whose cancel was requested ends cancelled. ARGV[4] = worker id, ARGV[5] = now
-- ('' = the store's clock), ARGV[6..] = job ids. Returns the changes (see lib.lua; no
-- `started_at`: no attempt ran).
local worker, now = ARGV[4], clock(ARGV[5])
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'cancel_requested', 'task')
  if f[1] == 'active' and f[2] == worker then
    local attempt = redis.call('HINCRBY', key, 'attempt', -1)
    redis.call('HDEL', key, 'started_at', 'worker_id')
    redis.call('HSET', key, 'run_at', now)
    if f[3] == '1' then
      finish(key, id, 'cancelled', now)
      change(out, id, f[4], 'cancelled', attempt, now, nil, nil)
    else
      change(out, id, f[4], requeue(key, id, now, now), attempt, now, now, nil)
    end
  end
end
wake()
return out
