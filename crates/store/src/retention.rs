//! Keeping Redis memory bounded: finished apalis task data is removed once a task is done,
//! and Courier's own history (final records, dead letters, index entries) is dropped after
//! the retention period. Without this, apalis-redis keeps every task's payload and
//! metadata forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::RedisConn;
use chrono::Utc;
use courier_core::DeliveryId;

use crate::scripts::{DROP_DONE_TASKS, TRIM_INDEX};
use crate::{Keys, StoreError};

/// How many finished tasks one call of the drop script takes.
const DROP_BATCH: usize = 1000;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Payloads and metadata of finished apalis tasks.
    pub tasks: u64,
    /// Index entries of records that expired.
    pub index_entries: u64,
    /// Dead letters older than the retention.
    pub dead_letters: u64,
}

/// Removes what no longer needs to be kept.
#[derive(Debug)]
pub struct Janitor {
    conn: RedisConn,
    keys: Keys,
    retention: Duration,
    /// Whether indexes written before they were registered have been looked for.
    registered_old_indexes: AtomicBool,
}

impl Janitor {
    pub fn new(conn: RedisConn, keys: Keys, retention: Duration) -> Self {
        Self {
            conn,
            keys,
            retention,
            registered_old_indexes: AtomicBool::new(false),
        }
    }

    /// One sweep; safe to run from every worker at once.
    pub async fn sweep(&self) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let mut conn = self.conn.clone();
        let queue = self.keys.queue_keys();
        loop {
            // The ids first, so that the script is handed every key it deletes.
            let ids: Vec<String> = redis::cmd("SRANDMEMBER")
                .arg(queue.done())
                .arg(DROP_BATCH)
                .query_async(&mut conn)
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut drop = DROP_DONE_TASKS.prepare_invoke();
            drop.key(queue.done()).key(queue.data());
            for id in &ids {
                drop.key(queue.meta(id)).arg(id);
            }
            let n: u64 = drop.invoke_async(&mut conn).await?;
            swept.tasks += n;
            if ids.len() < DROP_BATCH {
                break;
            }
        }
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or_default();
        let ms = u64::try_from(cutoff.timestamp_millis()).unwrap_or(0);
        let oldest_kept = format!("({}{}", DeliveryId::PREFIX, ulid::Ulid::from_parts(ms, 0));
        if !self.registered_old_indexes.load(Ordering::Relaxed) {
            self.register_old_indexes(&mut conn).await?;
            self.registered_old_indexes.store(true, Ordering::Relaxed);
        }
        // The indexes are registered when written, so a sweep costs as many commands as
        // there are tenants and destinations, not a scan of the keyspace.
        let index_keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.delivery_indexes())
            .query_async(&mut conn)
            .await?;
        for key in index_keys {
            let n: u64 = TRIM_INDEX
                .key(&key)
                .key(self.keys.delivery_indexes())
                .arg(&oldest_kept)
                .invoke_async(&mut conn)
                .await?;
            swept.index_entries += n;
        }
        let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.dead_letters())
            .arg("-inf")
            .arg(cutoff.timestamp_millis())
            .query_async(&mut conn)
            .await?;
        for id in &old {
            redis::pipe()
                .del(self.keys.dead_letter(id))
                .zrem(self.keys.dead_letters(), id)
                .exec_async(&mut conn)
                .await?;
        }
        swept.dead_letters = old.len() as u64;
        Ok(swept)
    }
}

impl Janitor {
    /// Registers indexes written before they were registered on write (once per process:
    /// a scan of the keyspace).
    async fn register_old_indexes(&self, conn: &mut RedisConn) -> Result<(), StoreError> {
        for pattern in self.keys.delivery_index_patterns() {
            let mut iter: redis::AsyncIter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter_async(conn)
                .await?;
            let mut found = Vec::new();
            while let Some(k) = iter.next_item().await {
                let k = k?;
                // Job indexes match the tenant pattern too; they expire by themselves.
                if self.keys.is_owner_index(&k) {
                    found.push(k);
                }
            }
            drop(iter);
            if !found.is_empty() {
                let _: () = redis::cmd("SADD")
                    .arg(self.keys.delivery_indexes())
                    .arg(&found)
                    .query_async(conn)
                    .await?;
            }
        }
        Ok(())
    }
}
