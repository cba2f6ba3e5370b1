-- Jobs of the queue, newest first, filtered. ARGV[4] = start ('+' or '(' .. id),
-- ARGV[5] = limit, ARGV[6] = state ('' for any), ARGV[7] = task ('' for any),
-- ARGV[8] = look at most this many ids. Returns {last id looked at, ids looked at, rows}.
local limit, state, task = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local ids = redis.call('ZREVRANGEBYLEX', K_ALL, ARGV[4], '-', 'LIMIT', 0, tonumber(ARGV[8]))
local rows, last = {}, ''
for _, id in ipairs(ids) do
  last = id
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'task')
  if f[1] and (state == '' or f[1] == state) and (task == '' or f[2] == task) then
    rows[#rows + 1] = redis.call('HGETALL', key)
    if #rows >= limit then
      break
    end
  end
end
return {last, #ids, rows}
