-- Apply attempt outcomes. ARGV[4..]: groups of 9 fields per outcome:
-- id, attempt, worker id, kind, finished_at ('' = the store's clock), result?, error?,
-- run_at ('' = none), delay ('' = none).
-- An outcome applies only while the job is still that worker's attempt.
-- Returns the changes applied (see `change` in lib.lua).
local store_now = nil
local out = {}
local woke = false
for i = 4, #ARGV, 9 do
  local id, attempt, worker, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'attempt', 'cancel_requested', 'task',
    'started_at')
  if f[1] == 'active' and f[2] == worker and f[3] == attempt then
    local at = ARGV[i + 4]
    if at == '' then
      store_now = store_now or clock('')
      at = store_now
    end
    local err = optional(ARGV[i + 6])
    if err and (kind == 'retry' or kind == 'failed') then
      append_error(key, err)
    end
    local state, run_at, attempt_after = nil, nil, tonumber(attempt)
    if kind == 'completed' then
      local result = optional(ARGV[i + 5])
      if result then
        redis.call('HSET', key, 'result', result)
      end
      state = 'completed'
    elseif kind == 'retry' or kind == 'snooze' then
      run_at = ARGV[i + 7]
      if run_at == '' then
        run_at = later(at, ARGV[i + 8])
      end
      if kind == 'snooze' then
        -- postponed, not failed: the attempt does not count
        attempt_after = attempt_after - 1
        redis.call('HSET', key, 'attempt', attempt_after)
        redis.call('HINCRBY', key, 'snoozes', 1)
        redis.call('HDEL', key, 'started_at')
      end
      if f[4] ~= '1' then
        state = requeue(key, id, run_at, at)
        woke = true
      else
        -- a cancel arrived while the attempt ran: it ends cancelled instead
        redis.call('HSET', key, 'run_at', run_at)
        redis.call('HDEL', key, 'worker_id')
        state = 'cancelled'
      end
    elseif kind == 'cancelled' then
      state = 'cancelled'
    else
      state = 'failed'
    end
    if finished_set(state) then
      finish(key, id, state, at)
      run_at = nil
    end
    change(out, id, f[5], state, attempt_after, at, run_at, f[6])
  end
end
if woke then
  wake()
end
return out
