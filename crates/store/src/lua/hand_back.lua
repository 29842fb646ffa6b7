-- Moves a stopping worker's in-flight task ids back to the active list and forgets the worker.
-- KEYS[1]: the worker's in-flight set
-- KEYS[2]: the active task list
-- KEYS[3]: the live workers sorted set
-- KEYS[4]: the signal list that wakes waiting workers
-- ARGV[1]: the worker name
-- Returns: how many task ids were handed back.
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids > 0 then
    redis.call('RPUSH', KEYS[2], unpack(ids))
    redis.call('DEL', KEYS[1])
    redis.call('DEL', KEYS[4])
    redis.call('LPUSH', KEYS[4], 1)
end
redis.call('ZREM', KEYS[3], ARGV[1])
return #ids
