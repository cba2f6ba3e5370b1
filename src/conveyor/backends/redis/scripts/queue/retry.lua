-- Re-queue a failed or cancelled job with one more attempt allowed (an operator's retry).
-- ARGV[4] = job id, ARGV[5] = now ('' = the store's clock).
-- Returns {'ok', state before, now, job hash}, {'missing'}, {'refused', state} or
-- {'key_held', holder id}.
local id, now = ARGV[4], clock(ARGV[5])
local key = job_key(id)
local f = redis.call('HMGET', key, 'state', 'key', 'attempt', 'max_attempts')
local state, unique = f[1], f[2]
if not state then
  return {'missing'}
end
if state ~= 'failed' and state ~= 'cancelled' then
  return {'refused', state}
end
if unique then
  local holder = redis.call('HGET', K_UNIQUE, unique)
  if holder and holder ~= id then
    local held = redis.call('HGET', job_key(holder), 'state')
    if held and (PENDING[held] or held == 'active') then
      return {'key_held', holder}
    end
  end
  redis.call('HSET', K_UNIQUE, unique, id)
end
redis.call('ZREM', finished_set(state), id)
redis.call('HDEL', key, 'finished_at', 'result', 'worker_id')
redis.call('HSET', key, 'state', 'queued', 'run_at', now, 'cancel_requested', 0,
  'max_attempts', math.max(tonumber(f[4]), tonumber(f[3]) + 1))
make_ready(key, id)
wake()
return {'ok', state, now, redis.call('HGETALL', key)}
