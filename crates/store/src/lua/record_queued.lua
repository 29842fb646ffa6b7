-- Writes a new delivery's QUEUED record and its index entries unless its tenant already
-- has as many deliveries waiting as it may (lib/record_admit.lua), and with it, when one is
-- given, the delivery's task as apalis-redis pushes one.
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
-- ARGV[7]: the channel idle workers listen on; a pushed task is announced there
-- Returns: {1, how many wait now} if written, {0, how many wait} if not.
local admitted = record_admit(
    {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]},
    {ARGV[1], ARGV[2], ARGV[3]})
if admitted[1] == 0 then
    return admitted
end
if ARGV[4] ~= '' then
    redis.call('HSETNX', KEYS[9], ARGV[4], ARGV[5])
    redis.call('HSET', KEYS[10], 'attempts', '0', 'max_attempts', '25', 'status', 'Pending',
        'idempotency_key', '')
    redis.call('ZADD', KEYS[11], ARGV[6], ARGV[4])
    redis.call('PUBLISH', ARGV[7], '1')
end
return admitted
