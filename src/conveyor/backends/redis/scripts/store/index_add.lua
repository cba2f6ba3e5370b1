-- Record which queue each new job lives in, and the queue itself.
-- KEYS[1] = the id -> queue index, KEYS[2] = the set of queue names (one hash tag).
-- ARGV[1] = queue, ARGV[2..] = job ids. Returns {id, owner queue, ...} for ids that already
-- belong to another queue (left unchanged).
redis.call('SADD', KEYS[2], ARGV[1])
local taken = {}
for i = 2, #ARGV do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1]) == 0 then
    local owner = redis.call('HGET', KEYS[1], ARGV[i])
    if owner ~= ARGV[1] then
      taken[#taken + 1] = ARGV[i]
      taken[#taken + 1] = owner
    end
  end
end
return taken
