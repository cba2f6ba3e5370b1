-- One consistent snapshot of the queue's figures. ARGV[4] = now ('' = the store's clock),
-- ARGV[5] = at most this many recent jobs for the averages.
-- Returns strings: paused, scheduled, queued, active, completed, failed, cancelled,
-- oldest due run_at (or ''), completed and failed in the last minute, avg wait, avg run.
local now, sample = clock(ARGV[4]), tonumber(ARGV[5])
local minute_ago, hour_ago = num(tonumber(now) - 60), num(tonumber(now) - 3600)
local due_scheduled = redis.call('ZCOUNT', K_SCHEDULED, '-inf', now)
local scheduled = redis.call('ZCARD', K_SCHEDULED) - due_scheduled
local queued = redis.call('ZCARD', K_READY) + due_scheduled
-- The oldest due job: the earliest scheduled one that is due, and the head of each priority
-- level of the ready set (ordered by priority, then run_at).
local oldest = nil
local first = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', now, 'LIMIT', 0, 1, 'WITHSCORES')
if first[2] then
  oldest = tonumber(first[2])
end
-- (At most 100 priority levels are looked at, so that a call stays short.)
local head = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
local levels = 0
while head[1] and levels < 100 do
  levels = levels + 1
  local run_at = tonumber(string.sub(head[1], 1, string.find(head[1], ':', 1, true) - 1))
  if not oldest or run_at < oldest then
    oldest = run_at
  end
  head = redis.call('ZRANGEBYSCORE', K_READY, '(' .. head[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
local waits, runs, n = 0, 0, 0
for _, set in ipairs({K_COMPLETED, K_FAILED}) do
  local ids = redis.call('ZREVRANGEBYSCORE', set, '+inf', hour_ago, 'LIMIT', 0, sample)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', job_key(id), 'run_at', 'started_at', 'finished_at')
    if f[2] and f[3] then
      waits = waits + tonumber(f[2]) - tonumber(f[1])
      runs = runs + tonumber(f[3]) - tonumber(f[2])
      n = n + 1
    end
  end
end
local function text(x)
  if x == nil then
    return ''
  end
  return string.format('%.17g', x)
end
return {
  redis.call('HGET', K_META, 'paused') or '0',
  tostring(scheduled), tostring(queued), tostring(redis.call('ZCARD', K_ACTIVE)),
  tostring(redis.call('ZCARD', K_COMPLETED)), tostring(redis.call('ZCARD', K_FAILED)),
  tostring(redis.call('ZCARD', K_CANCELLED)), text(oldest),
  tostring(redis.call('ZCOUNT', K_COMPLETED, minute_ago, '+inf')),
  tostring(redis.call('ZCOUNT', K_FAILED, minute_ago, '+inf')),
  n > 0 and text(waits / n) or '', n > 0 and text(runs / n) or ''
}
