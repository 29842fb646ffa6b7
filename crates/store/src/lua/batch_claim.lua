-- Claims one open window for closing, if it is due by Redis's clock and no other worker
-- holds it (or the caller holds it already), and seals it: from now on appends go to later
-- windows. Returns the window's counters.
-- KEYS[1]: the window's claim
-- KEYS[2]: the window's hash
-- KEYS[3]: the destination's sealed marker
-- KEYS[4]: the set of open windows
-- ARGV[1]: the claimer's token
-- ARGV[2]: how long the claim lasts unless renewed (ms)
-- ARGV[3]: the window's start (unix s)
-- ARGV[4]: the window's member in the set of open windows
-- Returns: {1, end, rows, bytes, entries, attempts, firstAttemptAt, now} if claimed;
-- {0} if another worker holds it, {-1} if it is not due, {-2} if it is not open any more.
local due = redis.call('ZSCORE', KEYS[4], ARGV[4])
if due == false then
    return {-2}
end
local now = tonumber(redis.call('TIME')[1])
if tonumber(due) > now then
    return {-1}
end
local holder = redis.call('GET', KEYS[1])
if holder ~= false and holder ~= ARGV[1] then
    return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local sealed = tonumber(redis.call('GET', KEYS[3]) or '-1')
if tonumber(ARGV[3]) > sealed then
    redis.call('SET', KEYS[3], ARGV[3])
end
local h = redis.call('HMGET', KEYS[2], 'end', 'rows', 'bytes', 'entries', 'attempts',
    'firstAttemptAt')
return {1, tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0'),
    tonumber(h[4] or '0'), tonumber(h[5] or '0'), tonumber(h[6] or '0'), now}
