-- Writes a new delivery's QUEUED record and its index entries unless its tenant already
-- has as many deliveries waiting as it may: the check and the count's increment are one
-- write, so two concurrent enqueues cannot both take the last place, and a crash cannot
-- leave a count without its record.
-- KEYS[1]: the record's string
-- KEYS[2]: the tenant's set of waiting delivery ids (its size is the count)
-- KEYS[3]: the destination's set of deliveries not final yet
-- KEYS[4]: the tenant's delivery index
-- KEYS[5]: the destination's delivery index
-- KEYS[6]: the job's delivery index
-- KEYS[7]: the tenant's index of QUEUED deliveries
-- KEYS[8]: the set of delivery indexes the janitor trims
-- ARGV[1]: the delivery id
-- ARGV[2]: the record's JSON
-- ARGV[3]: how many deliveries the tenant may have waiting; 0 for no limit
-- Returns: {1, how many wait now} if written, {0, how many wait} if not.
local limit = tonumber(ARGV[3])
local waiting = redis.call('SCARD', KEYS[2])
if limit > 0 and waiting >= limit and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
    return {0, waiting}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
redis.call('ZADD', KEYS[7], 0, ARGV[1])
redis.call('SADD', KEYS[8], KEYS[4], KEYS[5], KEYS[7])
return {1, redis.call('SCARD', KEYS[2])}
