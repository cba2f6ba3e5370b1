-- Shared helpers, prepended to every script when it is loaded (queue scripts then bind the
-- queue their KEYS name, see _queue.lua; the bulk insert binds each job's queue in turn).
-- A queue's KEYS are nine keys in this order, sharing one hash tag (one Redis Cluster slot).
local K_READY, K_SCHEDULED, K_ACTIVE, K_COMPLETED, K_FAILED, K_CANCELLED, K_ALL, K_UNIQUE, K_META
local JOB_PREFIX, WAKE_CHANNEL, QUEUE
local PENDING = {scheduled = true, queued = true, blocked = true}

-- Use the queue whose nine keys start at KEYS[first].
local function bind_queue(first, job_prefix, wake_channel, queue)
  K_READY, K_SCHEDULED, K_ACTIVE = KEYS[first], KEYS[first + 1], KEYS[first + 2]
  K_COMPLETED, K_FAILED, K_CANCELLED = KEYS[first + 3], KEYS[first + 4], KEYS[first + 5]
  K_ALL, K_UNIQUE, K_META = KEYS[first + 6], KEYS[first + 7], KEYS[first + 8]
  JOB_PREFIX, WAKE_CHANNEL, QUEUE = job_prefix, wake_channel, queue
end

-- The sorted set of finished jobs in `state`, or nil when that state is not final.
local function finished_set(state)
  if state == 'completed' then
    return K_COMPLETED
  elseif state == 'failed' then
    return K_FAILED
  elseif state == 'cancelled' then
    return K_CANCELLED
  end
  return nil
end

-- The store's clock (Redis TIME) as Unix seconds in text, unless the caller gave a time
-- (tests only): every lease and due time is judged by the server, never by a worker.
local function clock(given)
  if given ~= '' then
    return given
  end
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

-- A computed time as text that reads back as the same double.
local function num(x)
  return string.format('%.17g', x)
end

-- `at` plus `seconds` (text); `at` itself when there is nothing to add.
local function later(at, seconds)
  if seconds == '' or tonumber(seconds) == 0 then
    return at
  end
  return num(tonumber(at) + tonumber(seconds))
end

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
  redis.call('ZADD', finished_set(state), at, id)
  free_unique(key, id)
end

-- An active job goes back to pending: queued if due at `now`, else scheduled.
-- Returns the new state.
local function requeue(key, id, run_at, now)
  redis.call('HSET', key, 'run_at', run_at)
  redis.call('HDEL', key, 'worker_id', 'lease_expires_at')
  redis.call('ZREM', K_ACTIVE, id)
  if tonumber(run_at) > tonumber(now) then
    redis.call('HSET', key, 'state', 'scheduled')
    redis.call('ZADD', K_SCHEDULED, run_at, id)
    return 'scheduled'
  end
  redis.call('HSET', key, 'state', 'queued')
  make_ready(key, id)
  return 'queued'
end

-- One state change as the scripts return it (the caller builds a JobChange):
-- id, task, new state, attempt after the change, at, run_at or '', started_at or ''.
local function change(out, id, task, state, attempt, at, run_at, started_at)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, task, state, attempt
  out[n + 5], out[n + 6], out[n + 7] = at, run_at or '', started_at or ''
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
