-- Delete the registry entries that expired by now. KEYS as in worker_beat.lua;
-- ARGV[1] = now ('' = the store's clock). Returns how many were deleted.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', clock(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #ids
