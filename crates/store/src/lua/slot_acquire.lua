-- Takes one of a destination's upload slots for a holder, if one is free under the
-- destination's adaptive limit (see slot_release.lua, which learns it).
-- KEYS[1]: the destination's slot holders, scored by claim expiry (ms)
-- KEYS[2]: present while the destination is moving (a slot was taken or given back just now)
-- KEYS[3]: the destination's learned limit (hash: limit, rtt, cutAt)
-- ARGV[1]: now (ms)
-- ARGV[2]: this claim's expiry (ms)
-- ARGV[3]: the limit a destination starts with, before anything was learned
-- ARGV[4]: the holder (a delivery id)
-- ARGV[5]: how long the destination counts as moving (ms)
-- ARGV[6]: the lowest limit
-- ARGV[7]: the highest limit
-- Returns: 1 if the slot was taken (or already held by this holder); if all are taken,
-- 2 while the destination is moving, else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    return 1
end
local learned = tonumber(redis.call('HGET', KEYS[3], 'limit'))
local cap = math.floor(learned or tonumber(ARGV[3]))
cap = math.max(tonumber(ARGV[6]), math.min(tonumber(ARGV[7]), cap))
if redis.call('ZCARD', KEYS[1]) < cap then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    redis.call('PEXPIREAT', KEYS[1], ARGV[2])
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
    return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 2
end
return 0
