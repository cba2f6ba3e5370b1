-- Jobs whose lease ran out (their worker died): back to queued with the lost attempt counted,
-- or failed ("worker lost") when out of attempts, or cancelled if a cancel was requested.
-- ARGV[4] = now ('' = the store's clock), ARGV[5] = at most this many.
-- Returns {requeued, failed, cancelled, seen, changes (see lib.lua)}.
local now, limit = clock(ARGV[4]), tonumber(ARGV[5])
local requeued, failed, cancelled = 0, 0, 0
local out = {}
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', '(' .. now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'attempt', 'max_attempts', 'cancel_requested',
    'task', 'started_at')
  if f[1] ~= 'active' then
    redis.call('ZREM', K_ACTIVE, id)
  else
    append_error(key, lost_error(f[2], now))
    redis.call('HDEL', key, 'worker_id')
    redis.call('HSET', key, 'run_at', now)
    local state, run_at = 'queued', now
    if f[4] == '1' then
      state, run_at = 'cancelled', nil
      cancelled = cancelled + 1
    elseif tonumber(f[2]) >= tonumber(f[3]) then
      state, run_at = 'failed', nil
      failed = failed + 1
    else
      requeue(key, id, now, now)
      requeued = requeued + 1
    end
    if run_at == nil then
      finish(key, id, state, now)
    end
    change(out, id, f[5], state, tonumber(f[2]), now, run_at, f[6])
  end
end
if requeued > 0 then
  wake()
end
return {requeued, failed, cancelled, #expired, out}
