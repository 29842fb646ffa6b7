-- key_lock(K, A): takes the lock of one object key for an owner, or takes it back if the
-- owner holds it (key_lock.lua, claim.lua).
-- K[1]: the lock (its value is the owner)
-- A[1]: the owner (a delivery id)
-- A[2]: how long the lock lasts (ms)
-- Returns: 1 if the owner holds the lock now, 0 if another owner does.
local function key_lock(K, A)
    local holder = redis.call('GET', K[1])
    if holder == false or holder == A[1] then
        redis.call('SET', K[1], A[1], 'PX', A[2])
        return 1
    end
    return 0
end
