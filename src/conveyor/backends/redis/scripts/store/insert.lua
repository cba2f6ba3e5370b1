-- Insert a batch of jobs into any number of queues, atomically (one script on one node).
-- KEYS[1] = the job id -> queue index, KEYS[2] = the set of queue names, then the nine keys
-- of each queue of the batch (see lib.lua).
-- ARGV[1] = the wake-up channel, ARGV[2] = the store's key prefix, ARGV[3] = now ('' for the
-- store's clock, TIME; a time only in tests), ARGV[4] = the number of queues Q,
-- ARGV[5 .. 4 + Q] = their names (in KEYS order); then 11 fields per job:
-- queue number (1..Q; negative when the caller chose the id), id, task, data, priority,
-- due, max_attempts, absolute ('1': due is a run_at the caller chose; else due is the delay
-- in seconds after now), key?, timeout?, backoff?
-- (Enqueued at now; `scheduled` when its run_at is after now, else `queued`: NewJob.due.)
-- Every job is checked before the first write (NewJob checked itself already; this keeps a
-- bad number from failing a write half-way): the batch is stored whole or not at all.
-- Returns {now, position, job hash, ...} (positions from 1): the time the jobs were enqueued
-- at, then the jobs not inserted because an existing job stands in their place: same id (in
-- any queue), or a pending or active job of the queue holding the same unique key.
local K_INDEX, K_QUEUES = KEYS[1], KEYS[2]
local channel, prefix, queues = ARGV[1], ARGV[2], tonumber(ARGV[4])
local now = clock(ARGV[3])
local function queue_job_prefix(queue)
  return '{' .. prefix .. ':' .. queue .. '}:job:'
end

for i = 5 + queues, #ARGV, 11 do
  local priority, due = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  if not (priority and due) or priority ~= priority or due ~= due then
    return redis.error_reply('job ' .. ARGV[i + 1] .. ': priority ' .. ARGV[i + 4] ..
      ' and due time ' .. ARGV[i + 5] .. ' must be numbers')
  end
end
for q = 1, queues do
  redis.call('SADD', K_QUEUES, ARGV[4 + q])
end
local out = {now}
local woken = {}
local bound = nil
local position = 0
for i = 5 + queues, #ARGV, 11 do
  position = position + 1
  local q = tonumber(ARGV[i])
  local custom = q < 0
  if custom then
    q = -q
  end
  if q ~= bound then
    local name = ARGV[4 + q]
    bind_queue(3 + (q - 1) * 9, queue_job_prefix(name), channel, name)
    bound = q
  end
  local id, unique = ARGV[i + 1], optional(ARGV[i + 8])
  local key = job_key(id)
  local existing = nil
  -- An id that exists is not inserted again (a call retried after its reply was lost finds
  -- its own jobs, perhaps claimed meanwhile). An id the caller chose may also exist in
  -- another queue, where its job, if gone, gives the id up.
  local there = key
  if custom then
    local owner = redis.call('HGET', K_INDEX, id)
    if owner and owner ~= QUEUE then
      there = queue_job_prefix(owner) .. id
    end
  end
  if redis.call('EXISTS', there) == 1 then
    existing = there
  end
  if not existing and unique then
    local holder = redis.call('HGET', K_UNIQUE, unique)
    if holder then
      local held = redis.call('HGET', job_key(holder), 'state')
      if held and (PENDING[held] or held == 'active') then
        existing = job_key(holder)
      end
    end
  end
  if existing then
    out[#out + 1] = position
    out[#out + 1] = redis.call('HGETALL', existing)
  else
    local run_at = ARGV[i + 5]
    if ARGV[i + 7] ~= '1' then
      run_at = later(now, run_at)
    end
    local state = 'queued'
    if tonumber(run_at) > tonumber(now) then
      state = 'scheduled'
    end
    redis.call('HSET', key, 'id', id, 'task', ARGV[i + 2], 'queue', QUEUE, 'state', state,
      'data', ARGV[i + 3], 'priority', ARGV[i + 4], 'run_at', run_at,
      'max_attempts', ARGV[i + 6], 'enqueued_at', now, 'attempt', 0,
      'errors', '[]', 'cancel_requested', 0)
    redis.call('HSET', K_INDEX, id, QUEUE)
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
      redis.call('ZADD', K_SCHEDULED, run_at, id)
    else
      redis.call('ZADD', K_READY, ARGV[i + 4], ready_member(run_at, id))
    end
    redis.call('ZADD', K_ALL, 0, id)
    woken[QUEUE] = true
  end
end
for queue in pairs(woken) do
  redis.call('PUBLISH', channel, queue)
end
return out
