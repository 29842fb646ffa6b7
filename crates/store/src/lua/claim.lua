-- A delivery's claims in one step: the lock of its object key (lib/key_lock.lua), then,
-- if it holds the lock, one of its destination's upload slots (lib/slot_acquire.lua), and
-- the key's marker as it is under the lock; holding both claims, it writes the delivery's
-- record as started (lib/record_write.lua). What key_lock.lua, slot_acquire.lua, a GET of
-- the marker and record_put.lua would do one after another.
-- KEYS[1]: the object key's lock
-- KEYS[2]: the destination's slot holders
-- KEYS[3]: its "moving" marker
-- KEYS[4]: its learned limit
-- KEYS[5]: the object key's marker
-- KEYS[6 ..]: the record's keys, as record_put.lua takes them
-- ARGV[1]: the owner (a delivery id; it holds the lock and the slot, and names the record)
-- ARGV[2]: how long the lock lasts (ms)
-- ARGV[3]: now (ms)
-- ARGV[4]: the slot claim's expiry (ms)
-- ARGV[5]: the limit a destination starts with, before anything was learned
-- ARGV[6]: how long the destination counts as moving (ms)
-- ARGV[7]: the lowest limit
-- ARGV[8]: the highest limit
-- ARGV[9]: the started record's JSON
-- ARGV[10]: seconds a final record is kept, as record_put.lua takes them
-- ARGV[11]: the record's kind, as record_put.lua takes it ('open')
-- Returns: {1 if the owner holds the lock else 0, the slot (slot_acquire.lua's answer, or
-- -1 when the lock was not taken), the marker or false}. The record is written only when
-- the slot's answer is 1.
if key_lock({KEYS[1]}, {ARGV[1], ARGV[2]}) == 0 then
    return {0, -1, false}
end
local slot = slot_acquire({KEYS[2], KEYS[3], KEYS[4]},
    {ARGV[3], ARGV[4], ARGV[5], ARGV[1], ARGV[6], ARGV[7], ARGV[8]})
local marker = redis.call('GET', KEYS[5])
if slot == 1 then
    local record_keys = {}
    for i = 6, #KEYS do
        record_keys[#record_keys + 1] = KEYS[i]
    end
    record_write(record_keys, {ARGV[1], ARGV[9], ARGV[10], ARGV[11]})
end
return {1, slot, marker}
