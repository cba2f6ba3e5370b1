-- Take the leader lease KEYS[1] for holder ARGV[1] for ARGV[2] milliseconds if it is free
-- (expired leases are gone: Redis expires the key by its own clock), or renew it if the
-- holder has it. Returns 1 when the holder leads after the call, else 0.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
