-- Cancel a job: a pending one at once, an active one by request (its worker acts on it).
-- ARGV[4] = job id, ARGV[5] = now ('' = the store's clock).
-- Returns {'ok', state before, now, job hash}, {'missing'} or {'refused', state}.
local id, now = ARGV[4], clock(ARGV[5])
local key = job_key(id)
local state = redis.call('HGET', key, 'state')
if not state then
  return {'missing'}
end
if PENDING[state] then
  if state == 'queued' then
    unready(key, id)
  else
    redis.call('ZREM', K_SCHEDULED, id)
  end
  redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now)
  redis.call('ZADD', K_CANCELLED, now, id)
  free_unique(key, id)
elseif state == 'active' then
  redis.call('HSET', key, 'cancel_requested', 1)
else
  return {'refused', state}
end
return {'ok', state, now, redis.call('HGETALL', key)}
