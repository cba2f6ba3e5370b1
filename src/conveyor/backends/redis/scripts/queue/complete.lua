-- Apply attempt outcomes. ARGV[4..]: groups of 8 fields per outcome:
-- id, attempt, worker id, kind, finished_at, result?, error?, run_at?
-- An outcome applies only while the job is still that worker's attempt.
local woke = false
for i = 4, #ARGV, 8 do
  local id, attempt, worker, kind, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'worker_id', 'attempt', 'cancel_requested')
  if f[1] == 'active' and f[2] == worker and f[3] == attempt then
    local err = optional(ARGV[i + 6])
    if err and (kind == 'retry' or kind == 'failed') then
      append_error(key, err)
    end
    if kind == 'completed' then
      local result = optional(ARGV[i + 5])
      if result then
        redis.call('HSET', key, 'result', result)
      end
      finish(key, id, 'completed', at)
    elseif kind == 'retry' and f[4] ~= '1' then
      requeue(key, id, optional(ARGV[i + 7]) or at, at)
      woke = true
    elseif kind == 'retry' then
      -- a cancel arrived while the attempt ran: it ends cancelled instead of retrying
      redis.call('HSET', key, 'run_at', optional(ARGV[i + 7]) or at)
      redis.call('HDEL', key, 'worker_id')
      finish(key, id, 'cancelled', at)
    elseif kind == 'cancelled' then
      finish(key, id, 'cancelled', at)
    else
      finish(key, id, 'failed', at)
    end
  end
end
if woke then
  wake()
end
return 0
