-- Schedules another try at closing a window after a transient failure, and gives up the
-- claim: the window stays open (its entries kept) and is due again at ARGV[3].
-- KEYS[1]: the window's claim
-- KEYS[2]: the window's hash
-- KEYS[3]: the set of open windows
-- ARGV[1]: the holder's token
-- ARGV[2]: the window's member in the set of open windows
-- ARGV[3]: when it is due again (unix s)
-- ARGV[4]: tries made so far
-- ARGV[5]: when the first try started (unix s)
-- Returns: 1 if rescheduled, 0 if the claim was lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[2], 'attempts', ARGV[4], 'firstAttemptAt', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
