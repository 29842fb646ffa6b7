-- slot_acquire(K, A): takes one of a destination's upload slots for a holder, if one is
-- free under the destination's adaptive limit (lib/slot_release.lua learns it)
-- (slot_acquire.lua, claim.lua).
-- K[1]: the destination's slot holders, scored by claim expiry (ms)
-- K[2]: present while the destination is moving (a slot was taken or given back just now)
-- K[3]: the destination's learned limit (hash: limit, rtt, cutAt)
-- A[1]: now (ms)
-- A[2]: this claim's expiry (ms)
-- A[3]: the limit a destination starts with, before anything was learned
-- A[4]: the holder (a delivery id)
-- A[5]: how long the destination counts as moving (ms)
-- A[6]: the lowest limit
-- A[7]: the highest limit
-- Returns: 1 if the slot was taken (or already held by this holder); if all are taken,
-- 2 while the destination is moving, else 0.
local function slot_acquire(K, A)
    redis.call('ZREMRANGEBYSCORE', K[1], '-inf', A[1])
    if redis.call('ZSCORE', K[1], A[4]) then
        redis.call('ZADD', K[1], A[2], A[4])
        return 1
    end
    local learned = tonumber(redis.call('HGET', K[3], 'limit'))
    local cap = math.floor(learned or tonumber(A[3]))
    cap = math.max(tonumber(A[6]), math.min(tonumber(A[7]), cap))
    if redis.call('ZCARD', K[1]) < cap then
        redis.call('ZADD', K[1], A[2], A[4])
        redis.call('PEXPIREAT', K[1], A[2])
        redis.call('SET', K[2], '1', 'PX', A[5])
        return 1
    end
    if redis.call('EXISTS', K[2]) == 1 then
        return 2
    end
    return 0
end
