-- Forget jobs that no longer exist in a queue (pruned, or never inserted), unless their id
-- has since been recorded for another queue. KEYS[1] = the id -> queue index.
-- ARGV[1] = queue, ARGV[2..] = job ids.
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
