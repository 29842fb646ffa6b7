-- record_write(K, A): writes a delivery record and moves its index entries; the one way a
-- record is written after its enqueue (record_put.lua, finish.lua).
-- K[1]: the record's string
-- K[2]: the job's delivery index
-- K[3]: the tenant's delivery index
-- K[4]: the destination's delivery index
-- K[5]: the tenant's index of deliveries in the record's status
-- K[6]: the set of delivery indexes the janitor trims
-- K[7]: the destination's set of deliveries not final yet
-- K[8]: the tenant's set of waiting delivery ids (its quota's count)
-- K[9 ..]: the tenant's indexes of deliveries in every other status (the id leaves them)
-- A[1]: the delivery id
-- A[2]: the record's JSON
-- A[3]: seconds a final record and its job's index are kept; '0' keeps them
-- A[4]: 'final', 'queued' or 'open' (any other status not final)
-- Returns: nothing.
local function record_write(K, A)
    if A[3] ~= '0' then
        redis.call('SET', K[1], A[2], 'EX', A[3])
        redis.call('ZADD', K[2], 0, A[1])
        redis.call('EXPIRE', K[2], A[3])
    else
        redis.call('SET', K[1], A[2])
        redis.call('ZADD', K[2], 0, A[1])
    end
    redis.call('ZADD', K[3], 0, A[1])
    redis.call('ZADD', K[4], 0, A[1])
    redis.call('ZADD', K[5], 0, A[1])
    redis.call('SADD', K[6], K[3], K[4], K[5])
    for i = 9, #K do
        redis.call('ZREM', K[i], A[1])
    end
    if A[4] == 'final' then
        redis.call('SREM', K[7], A[1])
        redis.call('SREM', K[8], A[1])
    else
        redis.call('SADD', K[7], A[1])
        -- Only a (re-)queued delivery enters the waiting count; a worker's progress
        -- writes leave it alone, so a late one after the final write cannot re-add it.
        if A[4] == 'queued' then
            redis.call('SADD', K[8], A[1])
        end
    end
end
