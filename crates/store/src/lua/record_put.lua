-- Writes (or overwrites) a delivery record and keeps its indexes in step
-- (lib/record_write.lua does the work).
-- KEYS[1]: the record's string
-- KEYS[2]: the job's delivery index
-- KEYS[3]: the tenant's delivery index
-- KEYS[4]: the destination's delivery index
-- KEYS[5]: the tenant's index of deliveries in the record's status
-- KEYS[6]: the set of delivery indexes the janitor trims
-- KEYS[7]: the destination's set of deliveries not final yet
-- KEYS[8]: the tenant's set of waiting delivery ids
-- KEYS[9 ..]: the tenant's indexes of deliveries in every other status
-- ARGV[1]: the delivery id
-- ARGV[2]: the record's JSON
-- ARGV[3]: seconds a final record and its job's index are kept; '0' keeps them
-- ARGV[4]: 'final', 'queued' or 'open' (any other status not final)
-- Returns: nil.
record_write(KEYS, ARGV)
return nil
