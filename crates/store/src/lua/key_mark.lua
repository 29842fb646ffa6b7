-- Records the newest result delivered at one object key, unless a newer one is recorded.
-- KEYS[1]: the marker, "<completedAt ms> <delivery id>"
-- ARGV[1]: completedAt of this result (ms)
-- ARGV[2]: its delivery id
-- ARGV[3]: how long the marker is kept (s)
-- Returns: 1 if the marker now names this result, 0 if a newer one was kept.
local current = redis.call('GET', KEYS[1])
if current then
    local ms = tonumber(string.match(current, '^(%d+)'))
    if ms and ms > tonumber(ARGV[1]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
return 1
