-- Releases the lock of one object key if the owner still holds it (lib/key_unlock.lua
-- does the work).
-- KEYS[1]: the lock (its value is the owner)
-- ARGV[1]: the owner (a delivery id)
-- Returns: 1 if the lock was released, 0 if another owner (or nobody) held it.
return key_unlock(KEYS, ARGV)
