-- Insert or replace a worker's registry entry, stamped with the store's clock.
-- KEYS[1] = the entries hash, KEYS[2] = the expiry sorted set.
-- ARGV[1] = worker id, ARGV[2] = its entry as a JSON object without `heartbeat_at`,
-- ARGV[3] = seconds it counts as live.
local now = clock('')
local entry = string.sub(ARGV[2], 1, -2) .. ',"heartbeat_at":' .. now .. '}'
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('ZADD', KEYS[2], later(now, ARGV[3]), ARGV[1])
return 0
