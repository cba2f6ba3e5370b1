-- Record the progress of a running attempt. ARGV[4] = job id, ARGV[5] = attempt,
-- ARGV[6] = progress (JSON). Returns 1, or 0 if that attempt is no longer active.
local key = job_key(ARGV[4])
local f = redis.call('HMGET', key, 'state', 'attempt')
if f[1] ~= 'active' or f[2] ~= ARGV[5] then
  return 0
end
redis.call('HSET', key, 'progress', ARGV[6])
return 1
