-- Counts one use of a rate-limited action in a fixed window that starts with the first use;
-- a use over the limit is refused and not counted.
-- KEYS[1]: the window's counter (a string that expires with the window)
-- ARGV[1]: how many uses a window allows
-- ARGV[2]: the window's length in milliseconds
-- Returns: {1, uses in this window so far} if allowed, {0, milliseconds until the window ends}
-- if refused.
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= limit then
    local left = redis.call('PTTL', KEYS[1])
    if left < 0 then
        -- A counter without an expiry (it cannot happen through this script) would refuse
        -- forever: give it one window.
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        left = tonumber(ARGV[2])
    end
    return {0, left}
end
used = redis.call('INCR', KEYS[1])
if used == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, used}
