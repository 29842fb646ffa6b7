-- Renews a window's claim while its holder works on it.
-- KEYS[1]: the window's claim
-- ARGV[1]: the holder's token
-- ARGV[2]: how long the claim lasts from now (ms)
-- Returns: 1 if the holder still holds it, 0 if it was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
