-- Moves up to ARGV[2] due task ids from apalis-redis's scheduled set to the active list, as
-- its fetch_next.lua does for all of them at once. That script hands every due id to one
-- RPUSH through Lua's unpack, which fails past about 8,000 values ("too many results to
-- unpack"): a backlog that big, left due while no worker fetched, would fail every fetch
-- after it. Called in bounded steps before a worker fetches, it keeps that backlog small.
-- KEYS[1]: the scheduled set (scored by due time, seconds)
-- KEYS[2]: the active task list
-- KEYS[3]: the signal list that wakes waiting workers
-- ARGV[1]: now (seconds)
-- ARGV[2]: the most ids to move
-- Returns: how many ids were moved.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
    redis.call('RPUSH', KEYS[2], unpack(ids))
    redis.call('ZREM', KEYS[1], unpack(ids))
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #ids
