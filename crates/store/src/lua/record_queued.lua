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
-- KEYS[9]: apalis-redis's task data hash
-- KEYS[10]: apalis-redis's metadata hash of the task pushed (ARGV[4])
-- KEYS[11]: apalis-redis's scheduled set
-- ARGV[1]: the delivery id
-- ARGV[2]: the record's JSON
-- ARGV[3]: how many deliveries the tenant may have waiting; 0 for no limit
-- ARGV[4]: the id of the task to push with the record, or '' for none
-- ARGV[5]: the task's payload
-- ARGV[6]: now (seconds): the task runs now, as apalis-redis's batch_push.lua schedules it
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
if ARGV[4] ~= '' then
    redis.call('HSETNX', KEYS[9], ARGV[4], ARGV[5])
    redis.call('HSET', KEYS[10], 'attempts', '0', 'max_attempts', '25', 'status', 'Pending',
        'idempotency_key', '')
    redis.call('ZADD', KEYS[11], ARGV[6], ARGV[4])
end
return {1, redis.call('SCARD', KEYS[2])}
