-- Takes the lock of one object key for an owner, or takes it back if the owner holds it.
-- KEYS[1]: the lock (its value is the owner)
-- ARGV[1]: the owner (a delivery id)
-- ARGV[2]: how long the lock lasts (ms)
-- Returns: 1 if the owner holds the lock now, 0 if another owner does.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
