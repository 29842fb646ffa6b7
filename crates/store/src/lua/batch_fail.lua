-- Gives up on a window after a permanent failure: it leaves the set of open windows (no
-- worker tries it again) and is marked FAILED, its entries kept for a replay of its dead
-- letter; the claim is released.
-- KEYS[1]: the window's claim
-- KEYS[2]: the window's hash
-- KEYS[3]: the set of open windows
-- ARGV[1]: the holder's token
-- ARGV[2]: the window's member in the set of open windows
-- ARGV[3]: tries made
-- Returns: 1 if marked, 0 if the claim was lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[2], 'status', 'FAILED', 'attempts', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
