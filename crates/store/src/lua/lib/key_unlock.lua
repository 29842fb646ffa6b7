-- key_unlock(K, A): releases the lock of one object key if the owner still holds it
-- (key_unlock.lua, finish.lua).
-- K[1]: the lock (its value is the owner)
-- A[1]: the owner (a delivery id)
-- Returns: 1 if the lock was released, 0 if another owner (or nobody) held it.
local function key_unlock(K, A)
    if redis.call('GET', K[1]) == A[1] then
        return redis.call('DEL', K[1])
    end
    return 0
end
