-- Drops the payload and metadata of finished apalis tasks. The caller reads the task ids
-- from the done set first (SRANDMEMBER) and passes each task's metadata key here; a task
-- another janitor dropped meanwhile is no longer in the done set and is skipped.
-- KEYS[1]: apalis's done set
-- KEYS[2]: its task data hash
-- KEYS[3..]: the metadata hash of each task, in the order of ARGV
-- ARGV[1..]: the task ids
-- Returns: how many tasks were dropped.
local n = 0
for i, id in ipairs(ARGV) do
    if redis.call('SREM', KEYS[1], id) == 1 then
        redis.call('HDEL', KEYS[2], id)
        redis.call('DEL', KEYS[2 + i])
        n = n + 1
    end
end
return n
