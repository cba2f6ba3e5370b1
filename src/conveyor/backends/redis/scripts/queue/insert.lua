-- Insert jobs into one queue. ARGV[4..]: groups of 11 fields per job:
-- id, task, state, data, priority, run_at, max_attempts, enqueued_at, key?, timeout?, backoff?
-- Returns {position, existing id, ...} (positions from 1) for the jobs not inserted because
-- an existing job stands in their place: same id, or a pending or active job holding the
-- same unique key.
local out = {}
local position = 0
for i = 4, #ARGV, 11 do
  position = position + 1
  local id, state = ARGV[i], ARGV[i + 2]
  local key = job_key(id)
  local unique = optional(ARGV[i + 8])
  local existing = nil
  if redis.call('EXISTS', key) == 1 then
    existing = id
  elseif unique then
    local holder = redis.call('HGET', K_UNIQUE, unique)
    if holder then
      local held = redis.call('HGET', job_key(holder), 'state')
      if held and (PENDING[held] or held == 'active') then
        existing = holder
      end
    end
  end
  if existing then
    out[#out + 1] = position
    out[#out + 1] = existing
  else
    redis.call('HSET', key, 'id', id, 'task', ARGV[i + 1], 'queue', QUEUE, 'state', state,
      'data', ARGV[i + 3], 'priority', ARGV[i + 4], 'run_at', ARGV[i + 5],
      'max_attempts', ARGV[i + 6], 'enqueued_at', ARGV[i + 7], 'attempt', 0,
      'errors', '[]', 'cancel_requested', 0)
    if unique then
      redis.call('HSET', key, 'key', unique)
      redis.call('HSET', K_UNIQUE, unique, id)
    end
    local timeout, backoff = optional(ARGV[i + 9]), optional(ARGV[i + 10])
    if timeout then
      redis.call('HSET', key, 'timeout', timeout)
    end
    if backoff then
      redis.call('HSET', key, 'backoff', backoff)
    end
    if state == 'scheduled' then
      redis.call('ZADD', K_SCHEDULED, ARGV[i + 5], id)
    else
      redis.call('ZADD', K_READY, ARGV[i + 4], ready_member(ARGV[i + 5], id))
    end
    redis.call('ZADD', K_ALL, 0, id)
  end
end
wake()
return out
