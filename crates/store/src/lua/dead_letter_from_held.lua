-- Turns one held payload into a dead letter, if it is still held.
-- KEYS[1]: the destination's held list
-- KEYS[2]: the dead letter (its JSON)
-- KEYS[3]: the dead-letter index (sorted by when they died)
-- ARGV[1]: the held payload, exactly as it is in the list
-- ARGV[2]: the dead letter's JSON
-- ARGV[3]: the dead letter's id (its member in the index)
-- ARGV[4]: when it died (ms), its score in the index
-- ARGV[5]: how long the dead letter is kept (s); 0 keeps it until replayed
-- Returns: 1 if the payload was held and is now a dead letter, 0 if it was no longer held
-- (released meanwhile): then nothing is written.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    return 0
end
if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
else
    redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
