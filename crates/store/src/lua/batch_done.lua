-- Ends a window whose objects landed (or whose deliveries failed for good): its entries,
-- hash, open-window entry and claim are deleted, so its memory is released. Only the
-- claim's holder may.
-- KEYS[1]: the window's claim
-- KEYS[2]: the window's hash
-- KEYS[3]: the window's list of entries
-- KEYS[4]: the set of open windows
-- ARGV[1]: the holder's token
-- ARGV[2]: the window's member in the set of open windows
-- Returns: 1 if ended, 0 if the claim was lost (nothing deleted).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
