-- Give the leader lease KEYS[1] up if holder ARGV[1] has it. Returns 1 if it was deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
