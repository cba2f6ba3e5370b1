-- Shared helpers, prepended to every queue script when it is loaded.
-- KEYS are always the nine keys of one queue, in this order (they share one hash tag, so a
-- script touches one Redis Cluster slot); ARGV[1] is the prefix of the queue's job hashes,
-- ARGV[2] the store's wake-up channel and ARGV[3] the queue's name.
local K_READY, K_SCHEDULED, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3]
local K_COMPLETED, K_FAILED, K_CANCELLED = KEYS[4], KEYS[5], KEYS[6]
local K_ALL, K_UNIQUE, K_META = KEYS[7], KEYS[8], KEYS[9]
local JOB_PREFIX, WAKE_CHANNEL, QUEUE = ARGV[1], ARGV[2], ARGV[3]

local FINISHED_SET = {completed = K_COMPLETED, failed = K_FAILED, cancelled = K_CANCELLED}
local PENDING = {scheduled = true, queued = true, blocked = true}

local function job_key(id)
  return JOB_PREFIX .. id
end

-- Ready jobs: score = priority, member = fixed-width run_at then id, so that ZRANGE order is
-- (priority, run_at, id), the claim order of every store.
local function ready_member(run_at, id)
  return string.format('%017.6f', tonumber(run_at)) .. ':' .. id
end

local function id_of_member(member)
  return string.sub(member, string.find(member, ':', 1, true) + 1)
end

local function make_ready(key, id)
  local f = redis.call('HMGET', key, 'priority', 'run_at')
  redis.call('ZADD', K_READY, f[1], ready_member(f[2], id))
end

local function unready(key, id)
  local f = redis.call('HMGET', key, 'run_at')
  redis.call('ZREM', K_READY, ready_member(f[1], id))
end

local function wake()
  redis.call('PUBLISH', WAKE_CHANNEL, QUEUE)
end

-- `errors` is a JSON array kept as text: append one error object (JSON text) to it.
local function append_error(key, err)
  local errors = redis.call('HGET', key, 'errors')
  if not errors or errors == '[]' then
    errors = '[' .. err .. ']'
  else
    errors = string.sub(errors, 1, -2) .. ',' .. err .. ']'
  end
  redis.call('HSET', key, 'errors', errors)
end

local function lost_error(attempt, now)
  return '{"attempt":' .. attempt .. ',"at":' .. now ..
    ',"error":"worker lost: lease expired before the attempt finished","traceback":null}'
end

-- A unique key is held only while its job is pending or active.
local function free_unique(key, id)
  local k = redis.call('HGET', key, 'key')
  if k and redis.call('HGET', K_UNIQUE, k) == id then
    redis.call('HDEL', K_UNIQUE, k)
  end
end

-- An active job ends in a final state.
local function finish(key, id, state, at)
  redis.call('HSET', key, 'state', state, 'finished_at', at)
  redis.call('HDEL', key, 'lease_expires_at')
  redis.call('ZREM', K_ACTIVE, id)
  redis.call('ZADD', FINISHED_SET[state], at, id)
  free_unique(key, id)
end

-- An active job goes back to pending: queued if due at `now`, else scheduled.
local function requeue(key, id, run_at, now)
  redis.call('HSET', key, 'run_at', run_at)
  redis.call('HDEL', key, 'worker_id', 'lease_expires_at')
  redis.call('ZREM', K_ACTIVE, id)
  if tonumber(run_at) > tonumber(now) then
    redis.call('HSET', key, 'state', 'scheduled')
    redis.call('ZADD', K_SCHEDULED, run_at, id)
  else
    redis.call('HSET', key, 'state', 'queued')
    make_ready(key, id)
  end
end

-- Scheduled jobs whose time has come join the ready set, where they compete by priority.
-- At most PROMOTE_LIMIT per call (earliest due first), so one call stays short.
local PROMOTE_LIMIT = 1000
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)
  for _, id in ipairs(due) do
    redis.call('ZREM', K_SCHEDULED, id)
    local key = job_key(id)
    redis.call('HSET', key, 'state', 'queued')
    make_ready(key, id)
  end
end

local function paused()
  return redis.call('HGET', K_META, 'paused') == '1'
end

-- Optional arguments arrive as '' (none) or '=' followed by the value.
local function optional(arg)
  if arg == '' then
    return nil
  end
  return string.sub(arg, 2)
end
