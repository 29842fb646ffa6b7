-- Ends a delivered upload in one step: raises the object key's marker to it, ends the
-- destination's run of permanent failures, writes the delivered record with its index
-- entries, gives the upload slot back (adjusting the destination's limit, as
-- slot_release.lua does) and releases the object key's lock. The parts are the functions
-- of lib/key_mark.lua, lib/record_write.lua, lib/slot_release.lua and lib/key_unlock.lua.
-- KEYS[1]: the record's string
-- KEYS[2 .. R]: the rest of the record's keys, as record_put.lua takes them (R = #KEYS - 7:
-- they include an index per delivery status, so R follows the number of statuses)
-- KEYS[R + 1]: the object key's marker
-- KEYS[R + 2]: the object key's lock
-- KEYS[R + 3]: the destination's health
-- KEYS[R + 4]: the set of failing destinations
-- KEYS[R + 5]: the destination's slot holders
-- KEYS[R + 6]: its "moving" marker
-- KEYS[R + 7]: its learned limit
-- ARGV[1]: the delivery id (it holds the slot and the lock)
-- ARGV[2]: the record's JSON
-- ARGV[3]: seconds the record is kept, as record_put.lua takes them
-- ARGV[4]: 'final'
-- ARGV[5]: the result's completedAt (ms)
-- ARGV[6]: how long the marker is kept (s)
-- ARGV[7]: the destination id (it leaves the failing set)
-- ARGV[8 .. 15]: slot_release.lua's ARGV[2 .. 9] (moving ms, now, signal, latency, start,
-- lowest and highest limit, how long the limit is kept)
-- Returns: what slot_release.lua returns.
local r = #KEYS - 7
local record_keys = {}
for i = 1, r do
    record_keys[i] = KEYS[i]
end
local release_args = {ARGV[1]}
for i = 8, 15 do
    release_args[#release_args + 1] = ARGV[i]
end
key_mark({KEYS[r + 1]}, {ARGV[5], ARGV[1], ARGV[6]})
redis.call('DEL', KEYS[r + 3])
redis.call('SREM', KEYS[r + 4], ARGV[7])
record_write(record_keys, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
local released = slot_release({KEYS[r + 5], KEYS[r + 6], KEYS[r + 7]}, release_args)
key_unlock({KEYS[r + 2]}, {ARGV[1]})
return released
