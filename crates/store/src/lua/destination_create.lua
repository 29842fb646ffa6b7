-- Saves a new destination unless its tenant already has as many as it may (one script, so
-- two concurrent creates cannot both take the last place).
-- KEYS[1]: the destination's string
-- KEYS[2]: the tenant's set of destination ids
-- KEYS[3]: the set of paused destinations
-- ARGV[1]: the destination id
-- ARGV[2]: the destination's JSON
-- ARGV[3]: how many destinations the tenant may have; 0 for no limit
-- ARGV[4]: "1" if the destination is paused, else "0"
-- Returns: {1, how many the tenant has now} if saved, {0, how many it has} if not.
local limit = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[2])
if limit > 0 and count >= limit then
    return {0, count}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if ARGV[4] == '1' then
    redis.call('SADD', KEYS[3], ARGV[1])
else
    redis.call('SREM', KEYS[3], ARGV[1])
end
return {1, redis.call('ZCARD', KEYS[2])}
