//! A fleet-wide snapshot of the queue, read from Redis in one script so the numbers agree
//! with each other: what is waiting, scheduled, in flight, held and dead, how old the
//! oldest waiting task is, how many workers are alive, and how many destinations are
//! failing or paused.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::queue::Liveness;
use crate::{Keys, StoreError};

/// One snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready to run now: in the active list, or scheduled at or before now.
    pub waiting: u64,
    /// Scheduled for later (retries with backoff).
    pub scheduled: u64,
    /// Taken by a worker and not yet acknowledged.
    pub in_flight: u64,
    /// Held because their destination is paused or failing.
    pub held: u64,
    /// Dead letters.
    pub dead: u64,
    /// Age of the oldest waiting task, 0 when none waits.
    pub oldest_waiting_age: Duration,
    /// Workers whose last heartbeat is within the liveness window.
    pub live_workers: u64,
    pub failing_destinations: u64,
    pub paused_destinations: u64,
}

/// Reads [`QueueStats`].
#[derive(Debug, Clone)]
pub struct StatsReader {
    conn: ConnectionManager,
    keys: Keys,
    liveness: Liveness,
}

impl StatsReader {
    pub fn new(conn: ConnectionManager, keys: Keys, liveness: Liveness) -> Self {
        Self {
            conn,
            keys,
            liveness,
        }
    }

    pub async fn read(&self) -> Result<QueueStats, StoreError> {
        let q = self.keys.queue();
        let now_ms = Utc::now().timestamp_millis();
        let window = self.liveness.heartbeat.as_secs() * self.liveness.missed_heartbeats as u64;
        let mut conn = self.conn.clone();
        let v: Vec<i64> = SNAPSHOT
            .key(format!("{q}:active"))
            .key(format!("{q}:scheduled"))
            .key(format!("{q}:workers"))
            .key(self.keys.dead_letters())
            .key(self.keys.failing_destinations())
            .key(self.keys.paused_destinations())
            .key(self.keys.held_destinations())
            .key(format!("{q}:inflight"))
            .arg(now_ms / 1000)
            .arg(window.max(1))
            .arg(format!("{}:destination:", self.keys.namespace()))
            .invoke_async(&mut conn)
            .await?;
        let get = |i: usize| u64::try_from(v.get(i).copied().unwrap_or(0)).unwrap_or(0);
        let oldest_ms = v.get(9).copied().unwrap_or(0);
        Ok(QueueStats {
            waiting: get(0),
            scheduled: get(1),
            in_flight: get(2),
            held: get(3),
            dead: get(4),
            live_workers: get(5),
            failing_destinations: get(6),
            paused_destinations: get(7),
            oldest_waiting_age: if get(8) == 0 || oldest_ms <= 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(u64::try_from(now_ms - oldest_ms).unwrap_or(0))
            },
        })
    }
}

static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1]: active list   KEYS[2]: scheduled zset (unix s)   KEYS[3]: workers zset (unix s)
-- KEYS[4]: dead letters  KEYS[5]: failing set  KEYS[6]: paused set  KEYS[7]: held-destinations set
-- KEYS[8]: in-flight set prefix
-- ARGV[1]: now (unix s)  ARGV[2]: liveness window (s)  ARGV[3]: destination key prefix
-- Returns: waiting, scheduled, in_flight, held, dead, live, failing, paused, any_waiting, oldest_ms
local now = tonumber(ARGV[1])
local active = redis.call('LLEN', KEYS[1])
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local later = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
local in_flight = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    in_flight = in_flight + redis.call('SCARD', KEYS[8] .. ':' .. w)
end
local held = 0
for _, d in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    held = held + redis.call('LLEN', ARGV[3] .. d .. ':held')
        + redis.call('LLEN', ARGV[3] .. d .. ':releasing')
end
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[2]), '+inf')
-- The oldest waiting task: the head of the active list (its id is a ULID, whose first 10
-- characters encode its creation time in ms), or the earliest due scheduled one.
local oldest = 0
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
    local alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
    local ms = 0
    for i = 1, 10 do
        local c = string.sub(head, i, i)
        local d = string.find(alphabet, c, 1, true)
        if not d then ms = 0 break end
        ms = ms * 32 + (d - 1)
    end
    oldest = ms
end
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #first == 2 then
    local ms = tonumber(first[2]) * 1000
    if oldest == 0 or ms < oldest then oldest = ms end
end
return {active + due, later, in_flight, held, redis.call('ZCARD', KEYS[4]), live,
        redis.call('SCARD', KEYS[5]), redis.call('SCARD', KEYS[6]),
        (active + due > 0) and 1 or 0, oldest}
"#,
    )
});
