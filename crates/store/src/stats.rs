//! A fleet-wide snapshot of the queue, read from Redis in one script so the numbers agree
//! with each other: what is waiting, scheduled, in flight, held and dead, how old the
//! oldest waiting task is, how many workers are alive, and how many destinations are
//! failing or paused.

use std::time::Duration;

use crate::RedisConn;
use chrono::Utc;
use courier_core::DestinationId;

use crate::queue::Liveness;
use crate::scripts::QUEUE_SNAPSHOT;
use crate::{Keys, StoreError};

/// How many times a snapshot is read again when a worker registered or a destination was
/// held between reading the members and reading the numbers; the last read is used as is.
const SNAPSHOT_ATTEMPTS: usize = 3;

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
    conn: RedisConn,
    keys: Keys,
    liveness: Liveness,
}

impl StatsReader {
    pub fn new(conn: RedisConn, keys: Keys, liveness: Liveness) -> Self {
        Self {
            conn,
            keys,
            liveness,
        }
    }

    pub async fn read(&self) -> Result<QueueStats, StoreError> {
        let mut attempt = 1;
        loop {
            let (v, now_ms) = self.read_once().await?;
            if v.get(10) == Some(&1) || attempt == SNAPSHOT_ATTEMPTS {
                return Ok(decode(&v, now_ms));
            }
            attempt += 1;
        }
    }

    /// One snapshot, and when it was taken (ms). The workers' in-flight sets and the held
    /// lists are found through the workers and held-destinations sets, read first; the
    /// script says whether those sets still held the same members when it ran.
    async fn read_once(&self) -> Result<(Vec<i64>, i64), StoreError> {
        let q = self.keys.queue_keys();
        let mut conn = self.conn.clone();
        let (workers, held): (Vec<String>, Vec<String>) = redis::pipe()
            .zrange(q.workers(), 0, -1)
            .smembers(self.keys.held_destinations())
            .query_async(&mut conn)
            .await?;
        let held_ids: Vec<DestinationId> = held
            .iter()
            .filter_map(|d| DestinationId::parse(d).ok())
            .collect();
        let now_ms = Utc::now().timestamp_millis();
        let window = self.liveness.heartbeat.as_secs() * self.liveness.missed_heartbeats as u64;
        let mut snapshot = QUEUE_SNAPSHOT.prepare_invoke();
        snapshot
            .key(q.active())
            .key(q.scheduled())
            .key(q.workers())
            .key(self.keys.dead_letters())
            .key(self.keys.failing_destinations())
            .key(self.keys.paused_destinations())
            .key(self.keys.held_destinations())
            .arg(now_ms / 1000)
            .arg(window.max(1))
            .arg(workers.len())
            .arg(held.len());
        for w in &workers {
            snapshot.key(q.inflight(w)).arg(w);
        }
        for d in &held_ids {
            snapshot
                .key(self.keys.held(d))
                .key(self.keys.releasing(d))
                .arg(d.as_str());
        }
        Ok((snapshot.invoke_async(&mut conn).await?, now_ms))
    }
}

/// The script's answer as [`QueueStats`].
fn decode(v: &[i64], now_ms: i64) -> QueueStats {
    let get = |i: usize| u64::try_from(v.get(i).copied().unwrap_or(0)).unwrap_or(0);
    let oldest_ms = v.get(9).copied().unwrap_or(0);
    QueueStats {
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
    }
}
