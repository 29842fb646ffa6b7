-- Moves one task apalis-redis gave up on (its own dead set, which nothing else in Courier
-- reads) into Courier's dead letters, exactly once: the call that removes the id from
-- apalis's dead set writes the letter and the record; any other call (a second janitor,
-- a repeated sweep) finds it gone and writes nothing.
-- KEYS[1]: apalis's dead set
-- KEYS[2]: apalis's task data hash
-- KEYS[3]: the task's metadata hash
-- KEYS[4]: the dead letter (string)
-- KEYS[5]: the dead letters sorted set
-- KEYS[6]: the delivery record (string)
-- KEYS[7]: the destination's pending set
-- KEYS[8]: the job's delivery index
-- ARGV[1]: the task id
-- ARGV[2]: the dead letter's JSON, or '' when the delivery needs none (already final)
-- ARGV[3]: the dead letter's id
-- ARGV[4]: when it died (unix ms)
-- ARGV[5]: how long letters and final records are kept, seconds (0: forever)
-- ARGV[6]: the record's JSON, or '' to leave the record as it is
-- ARGV[7]: the delivery id
-- Returns: 1 when this call moved the task, 0 when it was no longer in the dead set.
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
local keep = tonumber(ARGV[5])
if ARGV[2] ~= '' then
    if keep > 0 then
        redis.call('SET', KEYS[4], ARGV[2], 'EX', keep)
    else
        redis.call('SET', KEYS[4], ARGV[2])
    end
    redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3])
end
if ARGV[6] ~= '' then
    if keep > 0 then
        redis.call('SET', KEYS[6], ARGV[6], 'EX', keep)
        redis.call('EXPIRE', KEYS[8], keep)
    else
        redis.call('SET', KEYS[6], ARGV[6])
    end
    redis.call('SREM', KEYS[7], ARGV[7])
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
