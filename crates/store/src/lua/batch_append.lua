-- Appends one delivery's NDJSON lines to its batched destination's open window and writes
-- its BATCHED record with its index entries, unless its tenant already has as many
-- deliveries waiting as it may (lib/record_admit.lua, as record_queued.lua). The window
-- is chosen here, from Redis's clock (one clock for the fleet): floor(now / w) * w, or the
-- first window after the last one claimed for closing, so that no row can miss a window. The caller built the
-- window's keys and the record for the window it expected (ARGV[5]); if another is due, it
-- is told which, and nothing is written.
-- KEYS[1]: the record's string
-- KEYS[2]: the tenant's set of waiting delivery ids (its size is the count)
-- KEYS[3]: the destination's set of deliveries not final yet
-- KEYS[4]: the tenant's delivery index
-- KEYS[5]: the destination's delivery index
-- KEYS[6]: the job's delivery index
-- KEYS[7]: the tenant's index of BATCHED deliveries
-- KEYS[8]: the set of delivery indexes the janitor trims
-- KEYS[9]: the destination's sealed marker (start of the last window claimed)
-- KEYS[10]: the window's list of entries
-- KEYS[11]: the window's hash
-- KEYS[12]: the set of open windows, scored by when they may be closed
-- ARGV[1]: the delivery id
-- ARGV[2]: the record's JSON
-- ARGV[3]: how many deliveries the tenant may have waiting; 0 for no limit
-- ARGV[4]: the destination's window length (s)
-- ARGV[5]: the window start (unix s) the keys and the record were built for
-- ARGV[6]: the entry: the delivery id, a newline, then its NDJSON lines
-- ARGV[7]: how many lines (rows) the entry holds
-- ARGV[8]: the bytes of its lines
-- ARGV[9]: the window's member in the set of open windows
-- ARGV[10]: the grace after a window's end before it is closed (s)
-- Returns: {1, how many wait now, window start} if written; {0, how many wait} if the
-- tenant is full; {-1, the window start to use} if the caller expected another window.
local now = tonumber(redis.call('TIME')[1])
local w = tonumber(ARGV[4])
local start = now - (now % w)
local sealed = tonumber(redis.call('GET', KEYS[9]) or '-1')
if start <= sealed then
    start = sealed - (sealed % w) + w
end
if start ~= tonumber(ARGV[5]) then
    return {-1, start}
end
local admitted = record_admit(
    {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]},
    {ARGV[1], ARGV[2], ARGV[3]})
if admitted[1] == 0 then
    return admitted
end
redis.call('RPUSH', KEYS[10], ARGV[6])
redis.call('HSETNX', KEYS[11], 'end', start + w)
redis.call('HINCRBY', KEYS[11], 'rows', ARGV[7])
redis.call('HINCRBY', KEYS[11], 'bytes', ARGV[8])
redis.call('HINCRBY', KEYS[11], 'entries', 1)
local due = tonumber(redis.call('HGET', KEYS[11], 'end')) + tonumber(ARGV[10])
redis.call('ZADD', KEYS[12], 'NX', due, ARGV[9])
return {1, admitted[2], start}
