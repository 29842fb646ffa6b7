-- Takes one of a destination's upload slots for a holder, if one is free.
-- KEYS[1]: the destination's slot holders, scored by claim expiry (ms)
-- KEYS[2]: present while the destination is moving (a slot was taken or given back just now)
-- ARGV[1]: now (ms)
-- ARGV[2]: this claim's expiry (ms)
-- ARGV[3]: the cap
-- ARGV[4]: the holder (a delivery id)
-- ARGV[5]: how long the destination counts as moving (ms)
-- Returns: 1 if the slot was taken (or already held by this holder); if all are taken,
-- 2 while the destination is moving, else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    redis.call('PEXPIREAT', KEYS[1], ARGV[2])
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
    return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 2
end
return 0
