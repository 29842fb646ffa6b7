#!lua flags=allow-oom
-- Hands a task back to the queue, due at a later time, after Courier's own storage failed
-- while a worker handled it, and writes the failed attempt into its record. Declared
-- allow-oom: when Redis refuses writes because it reached maxmemory (noeviction), this is
-- the one write a worker still makes, so that the task follows Courier's retry policy
-- instead of apalis-redis's. It adds one task and its record to a Redis over its limit;
-- apalis drops the task it replaces (its data goes with the janitor's next sweep).
-- The new task is written as apalis-redis's batch_push.lua writes a scheduled one.
-- KEYS[1]: the delivery record (string)
-- KEYS[2]: the destination's pending set
-- KEYS[3]: apalis's task data hash
-- KEYS[4]: the new task's metadata hash
-- KEYS[5]: apalis's scheduled set
-- ARGV[1]: the record's JSON, or '' to leave the record as it is
-- ARGV[2]: the delivery id
-- ARGV[3]: the new task's id
-- ARGV[4]: the task payload
-- ARGV[5]: when the task is due (unix seconds)
-- Returns: 1 when the task was scheduled, 0 when a task of that id already existed.
if ARGV[1] ~= '' then
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('SADD', KEYS[2], ARGV[2])
end
if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4]) == 0 then
    return 0
end
redis.call('HSET', KEYS[4], 'attempts', 0, 'max_attempts', 25, 'status', 'Pending',
    'idempotency_key', '')
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[3])
return 1
