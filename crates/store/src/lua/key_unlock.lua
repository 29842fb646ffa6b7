-- Releases the lock of one object key if the owner still holds it.
-- KEYS[1]: the lock (its value is the owner)
-- ARGV[1]: the owner (a delivery id)
-- Returns: 1 if the lock was released, 0 if another owner (or nobody) held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
