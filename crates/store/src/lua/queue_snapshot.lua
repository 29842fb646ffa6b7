-- A snapshot of the queue whose numbers agree with each other. The per-worker in-flight sets
-- and the per-destination held lists are found at run time, so the caller reads the
-- registered workers and the held destinations first and passes their keys here; the script
-- says whether those members are still exactly the same (else the caller reads again).
-- KEYS[1]: active list
-- KEYS[2]: scheduled zset (unix s)
-- KEYS[3]: workers zset (unix s)
-- KEYS[4]: dead letters zset
-- KEYS[5]: failing destinations set
-- KEYS[6]: paused destinations set
-- KEYS[7]: held-destinations set
-- KEYS[8 .. 7+W]: the in-flight set of each worker of ARGV[5 .. 4+W]
-- KEYS[8+W ..]: the held list, then the releasing list, of each destination of ARGV[5+W ..]
-- ARGV[1]: now (unix s)
-- ARGV[2]: liveness window (s)
-- ARGV[3]: W, how many workers were read
-- ARGV[4]: how many members the held-destinations set had when read
-- ARGV[5 .. 4+W]: the worker names
-- ARGV[5+W ..]: the held destination ids
-- Returns: waiting, scheduled, in_flight, held, dead, live, failing, paused, any_waiting,
-- oldest_ms, and 1 if the workers and held destinations are the ones passed, else 0.
local now = tonumber(ARGV[1])
local workers = tonumber(ARGV[3])
local held_members = tonumber(ARGV[4])
local agrees = redis.call('ZCARD', KEYS[3]) == workers
    and redis.call('SCARD', KEYS[7]) == held_members
local active = redis.call('LLEN', KEYS[1])
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local later = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
local in_flight = 0
for i = 1, workers do
    if not redis.call('ZSCORE', KEYS[3], ARGV[4 + i]) then agrees = false end
    in_flight = in_flight + redis.call('SCARD', KEYS[7 + i])
end
local held = 0
local first_held = 8 + workers
for i = 5 + workers, #ARGV do
    if redis.call('SISMEMBER', KEYS[7], ARGV[i]) == 0 then agrees = false end
end
for i = first_held, #KEYS do
    held = held + redis.call('LLEN', KEYS[i])
end
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[2]), '+inf')
-- The oldest waiting task: the head of the active list (its id is a ULID, whose first 10
-- characters encode its creation time in ms), or the earliest due scheduled one.
local oldest = 0
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
    local alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
    local ms = 0
    for i = 1, 10 do
        local c = string.sub(head, i, i)
        local d = string.find(alphabet, c, 1, true)
        if not d then ms = 0 break end
        ms = ms * 32 + (d - 1)
    end
    oldest = ms
end
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #first == 2 then
    local ms = tonumber(first[2]) * 1000
    if oldest == 0 or ms < oldest then oldest = ms end
end
return {active + due, later, in_flight, held, redis.call('ZCARD', KEYS[4]), live,
        redis.call('SCARD', KEYS[5]), redis.call('SCARD', KEYS[6]),
        (active + due > 0) and 1 or 0, oldest, agrees and 1 or 0}
