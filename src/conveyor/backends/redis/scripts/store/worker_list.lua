-- The live registry entries. KEYS as in worker_beat.lua; ARGV[1] = now ('' = the store's
-- clock). Returns the entries (JSON) of the workers whose expiry is after now.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. clock(ARGV[1]), '+inf')
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[1], unpack(ids))
