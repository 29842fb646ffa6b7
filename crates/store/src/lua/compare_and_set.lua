-- Replaces a string only if it still holds what the caller read (a re-seal must not undo
-- an update that happened in between).
-- KEYS[1]: the string
-- ARGV[1]: the value the caller read
-- ARGV[2]: the new value
-- Returns: 1 if replaced, 0 if the value had changed.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    return 1
end
return 0
