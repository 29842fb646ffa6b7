-- Gives a holder's upload slot back and marks the destination as moving.
-- KEYS[1]: the destination's slot holders
-- KEYS[2]: its "moving" marker
-- ARGV[1]: the holder (a delivery id)
-- ARGV[2]: how long the destination counts as moving (ms)
-- Returns: 0.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
end
return 0
