-- Drops a delivery index's entries older than the retention, and forgets the index once empty.
-- KEYS[1]: a delivery index (ids scored 0, in lexicographic order)
-- KEYS[2]: the set of delivery indexes
-- ARGV[1]: the lex bound of the oldest id kept, exclusive ("(dlv_…")
-- Returns: how many entries were dropped.
local n = redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], KEYS[1])
end
return n
