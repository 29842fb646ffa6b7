-- key_mark(K, A): records the newest result delivered at one object key, unless a newer
-- one is recorded (key_mark.lua, finish.lua).
-- K[1]: the marker, "<completedAt ms> <delivery id>"
-- A[1]: completedAt of this result (ms)
-- A[2]: its delivery id
-- A[3]: how long the marker is kept (s)
-- Returns: 1 if the marker now names this result, 0 if a newer one was kept.
local function key_mark(K, A)
    local current = redis.call('GET', K[1])
    if current then
        local ms = tonumber(string.match(current, '^(%d+)'))
        if ms and ms > tonumber(A[1]) then
            return 0
        end
    end
    redis.call('SET', K[1], A[1] .. ' ' .. A[2], 'EX', A[3])
    return 1
end
