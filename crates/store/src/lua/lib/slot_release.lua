-- slot_release(K, A): gives a holder's upload slot back, marks the destination as moving,
-- and adjusts the destination's limit by what the upload saw: additive increase, multiplicative decrease
-- (as TCP and Vector's adaptive request concurrency do).
--   overloaded (throttled, 5xx, timed out): the limit halves, at most once per window;
--   done, slower than twice the usual time of a one-request upload: the limit drops by a
--     tenth, at most once per window (latency rises before errors do);
--   done while every slot was in use: the limit grows by one until its first cut (slow
--     start: it doubles every round, as TCP's does), then by 1/limit (one per round);
--   neutral (the customer's or the rows' fault): no change.
-- A window is the usual one-request upload time, at least 100 ms. Only the holder's own
-- release counts, so a stale or repeated release changes nothing.
-- K[1]: the destination's slot holders
-- K[2]: its "moving" marker
-- K[3]: its learned limit (hash: limit, rtt (ms, moving average), cutAt (ms), and
-- avoiding: '1' once the limit was first cut, which ends its slow start)
-- A[1]: the holder (a delivery id)
-- A[2]: how long the destination counts as moving (ms)
-- A[3]: now (ms)
-- A[4]: the signal: done | overloaded | neutral
-- A[5]: the upload's time (ms) when it was one request, else -1
-- A[6]: the limit a destination starts with
-- A[7]: the lowest limit
-- A[8]: the highest limit
-- A[9]: how long a learned limit is kept after the last upload (ms)
-- Returns: {the limit after this release in thousandths, the change: 1 grown, 0 none,
-- -1 halved (overloaded), -2 trimmed (slower)}.
local function slot_release(K, A)
    local held = redis.call('ZCARD', K[1])
    local was_held = redis.call('ZREM', K[1], A[1]) == 1
    local lowest, highest = tonumber(A[7]), tonumber(A[8])
    local limit = tonumber(redis.call('HGET', K[3], 'limit')) or tonumber(A[6])
    limit = math.max(lowest, math.min(highest, limit))
    local before = limit
    local rtt = tonumber(redis.call('HGET', K[3], 'rtt'))
    local cut_at = tonumber(redis.call('HGET', K[3], 'cutAt')) or 0
    local avoiding = redis.call('HGET', K[3], 'avoiding') == '1'
    local now = tonumber(A[3])
    local latency = tonumber(A[5])
    local window = math.max(rtt or 0, 100)
    local change = 0
    if was_held then
        redis.call('SET', K[2], '1', 'PX', A[2])
        local signal = A[4]
        if signal == 'overloaded' then
            if now - cut_at >= window then
                limit = limit * 0.5
                cut_at = now
                avoiding = true
                change = -1
            end
        elseif signal == 'done' then
            if latency >= 0 and rtt and latency > 2 * rtt and now - cut_at >= window then
                limit = limit * 0.9
                cut_at = now
                avoiding = true
                change = -2
            elseif held >= math.floor(limit) and limit < highest then
                if avoiding then
                    limit = limit + 1 / limit
                else
                    limit = limit + 1
                end
                change = 1
            end
            if latency >= 0 then
                rtt = rtt and (0.9 * rtt + 0.1 * latency) or latency
            end
        end
        limit = math.max(lowest, math.min(highest, limit))
        if limit == before then
            change = 0
        end
        redis.call('HSET', K[3], 'limit', limit, 'cutAt', cut_at, 'avoiding', avoiding and '1' or '0')
        if rtt then
            redis.call('HSET', K[3], 'rtt', rtt)
        end
        redis.call('PEXPIRE', K[3], A[9])
    end
    return {math.floor(limit * 1000), change}
end
