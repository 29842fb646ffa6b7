-- Opens a FAILED window again (its dead letter replayed): due now, its tries counted
-- from zero.
-- KEYS[1]: the window's hash
-- KEYS[2]: the set of open windows
-- ARGV[1]: the window's member in the set of open windows
-- Returns: 1 if reopened, 0 if there is no such window.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('HDEL', KEYS[1], 'status', 'attempts', 'firstAttemptAt')
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
