-- record_admit(K, A): writes a new delivery's record (QUEUED, or BATCHED) and its index
-- entries unless its tenant already has as many deliveries waiting as it may: the check and
-- the count's increment are one write, so two concurrent enqueues cannot both take the last
-- place, and a crash cannot leave a count without its record (record_queued.lua,
-- batch_append.lua).
-- K[1]: the record's string
-- K[2]: the tenant's set of waiting delivery ids (its size is the count)
-- K[3]: the destination's set of deliveries not final yet
-- K[4]: the tenant's delivery index
-- K[5]: the destination's delivery index
-- K[6]: the job's delivery index
-- K[7]: the tenant's index of deliveries in the record's status
-- K[8]: the set of delivery indexes the janitor trims
-- A[1]: the delivery id
-- A[2]: the record's JSON
-- A[3]: how many deliveries the tenant may have waiting; 0 for no limit
-- Returns: {1, how many wait now} if written, {0, how many wait} if not.
local function record_admit(K, A)
    local limit = tonumber(A[3])
    local waiting = redis.call('SCARD', K[2])
    if limit > 0 and waiting >= limit and redis.call('SISMEMBER', K[2], A[1]) == 0 then
        return {0, waiting}
    end
    redis.call('SET', K[1], A[2])
    redis.call('SADD', K[2], A[1])
    redis.call('SADD', K[3], A[1])
    redis.call('ZADD', K[4], 0, A[1])
    redis.call('ZADD', K[5], 0, A[1])
    redis.call('ZADD', K[6], 0, A[1])
    redis.call('ZADD', K[7], 0, A[1])
    redis.call('SADD', K[8], K[4], K[5], K[7])
    return {1, redis.call('SCARD', K[2])}
end
