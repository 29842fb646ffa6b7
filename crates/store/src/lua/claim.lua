-- A delivery's claims in one step: the lock of its object key (lib/key_lock.lua), then,
-- if it holds the lock, one of its destination's upload slots (lib/slot_acquire.lua), and
-- the key's marker as it is under the lock. What key_lock.lua, slot_acquire.lua and a GET
-- of the marker would do one after another.
-- KEYS[1]: the object key's lock
-- KEYS[2]: the destination's slot holders
-- KEYS[3]: its "moving" marker
-- KEYS[4]: its learned limit
-- KEYS[5]: the object key's marker
-- ARGV[1]: the owner (a delivery id; it holds the lock and the slot)
-- ARGV[2]: how long the lock lasts (ms)
-- ARGV[3]: now (ms)
-- ARGV[4]: the slot claim's expiry (ms)
-- ARGV[5]: the limit a destination starts with, before anything was learned
-- ARGV[6]: how long the destination counts as moving (ms)
-- ARGV[7]: the lowest limit
-- ARGV[8]: the highest limit
-- Returns: {1 if the owner holds the lock else 0, the slot (slot_acquire.lua's answer, or
-- -1 when the lock was not taken), the marker or false}.
if key_lock({KEYS[1]}, {ARGV[1], ARGV[2]}) == 0 then
    return {0, -1, false}
end
local slot = slot_acquire({KEYS[2], KEYS[3], KEYS[4]},
    {ARGV[3], ARGV[4], ARGV[5], ARGV[1], ARGV[6], ARGV[7], ARGV[8]})
return {1, slot, redis.call('GET', KEYS[5])}
