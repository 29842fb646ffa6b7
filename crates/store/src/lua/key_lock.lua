-- Takes the lock of one object key for an owner, or takes it back if the owner holds it
-- (lib/key_lock.lua does the work).
-- KEYS[1]: the lock (its value is the owner)
-- ARGV[1]: the owner (a delivery id)
-- ARGV[2]: how long the lock lasts (ms)
-- Returns: 1 if the owner holds the lock now, 0 if another owner does.
return key_lock(KEYS, ARGV)
