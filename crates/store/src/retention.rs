//! Keeping Redis memory bounded: finished apalis task data is removed once a task is done,
//! and Courier's own history (final records, dead letters, index entries) is dropped after
//! the retention period. Without this, apalis-redis keeps every task's payload and
//! metadata forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::RedisConn;
use chrono::Utc;
use courier_core::DeliveryId;

use crate::scripts::{ADOPT_DEAD_TASK, DROP_DONE_TASKS, TRIM_INDEX};
use crate::{DeadLetter, Keys, StoreError};
use courier_core::ErrorCode;
use courier_core::delivery::{DeliveryError, DeliveryTask};

/// How many finished tasks one call of the drop script takes.
const DROP_BATCH: usize = 1000;

/// How many of apalis's dead tasks one sweep moves into Courier's dead letters.
const ADOPT_BATCH: usize = 100;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Payloads and metadata of finished apalis tasks.
    pub tasks: u64,
    /// Index entries of records that expired.
    pub index_entries: u64,
    /// Dead letters older than the retention.
    pub dead_letters: u64,
    /// Tasks apalis-redis gave up on, moved into Courier's dead letters.
    pub adopted: u64,
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
        swept.adopted = self.adopt_dead_tasks(&mut conn).await?;
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
    /// Moves the tasks in apalis-redis's own dead set (where its `handle_results.lua` puts a
    /// task after 25 failed runs, and which nothing else in Courier reads) into Courier's
    /// dead letters: the record `FAILED` with `StorageRetriesExhausted`, replayable like
    /// any dead letter. A task whose delivery is already final is only dropped; a payload
    /// that is not a delivery task becomes an `UndecodableTask` letter. Each task moves
    /// once, whichever janitor gets it first (`lua/adopt_dead_task.lua`).
    async fn adopt_dead_tasks(&self, conn: &mut RedisConn) -> Result<u64, StoreError> {
        let q = self.keys.queue_keys();
        let ids: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(q.dead())
            .arg(ADOPT_BATCH)
            .query_async(conn)
            .await?;
        let mut moved = 0;
        for task_id in ids {
            let (payload, attempts): (Option<Vec<u8>>, Option<String>) = redis::pipe()
                .hget(q.data(), &task_id)
                .hget(q.meta(&task_id), "attempts")
                .query_async(conn)
                .await?;
            let now = Utc::now();
            let payload = payload.unwrap_or_default();
            let tries = attempts.unwrap_or_else(|| "?".into());
            // The task's JSON, for the letter too (queued payloads may be compressed).
            let json = courier_core::payload::json(&payload)
                .map(std::borrow::Cow::into_owned)
                .ok();
            let payload = json.unwrap_or(payload);
            let (letter, record) = match serde_json::from_slice::<DeliveryTask>(&payload) {
                Ok(task) => {
                    let json: Option<String> = redis::cmd("GET")
                        .arg(self.keys.delivery(&task.delivery_id))
                        .query_async(conn)
                        .await?;
                    let record = json.as_deref().map(crate::records::decode).transpose()?;
                    let error = DeliveryError::new(
                        ErrorCode::StorageRetriesExhausted,
                        format!(
                            "the queue gave up on the task after {tries} failed runs (Courier's \
                             own storage kept failing); replay it once storage is healthy"
                        ),
                    );
                    match record {
                        // Already final (delivered, superseded, or failed and dead-lettered
                        // by a worker): the task is a leftover.
                        Some(r) if r.status.is_final() => (None, None),
                        record => {
                            let record = record.map(|mut r| {
                                r.failed(error.clone(), now);
                                r
                            });
                            let letter = DeadLetter {
                                id: task.delivery_id.to_string(),
                                destination_id: Some(task.destination_id.clone()),
                                code: error.code,
                                reason: error.message,
                                died_at: now,
                                payload: serde_json::from_slice(&payload)
                                    .unwrap_or(serde_json::Value::Null),
                            };
                            (Some(letter), record)
                        }
                    }
                }
                Err(e) if !payload.is_empty() => {
                    let letter = DeadLetter {
                        id: format!("poison_{}", ulid::Ulid::new()),
                        destination_id: None,
                        code: ErrorCode::UndecodableTask.to_string(),
                        reason: format!("the task payload is not a delivery task: {e}"),
                        died_at: now,
                        payload: serde_json::from_slice(&payload).unwrap_or_else(|_| {
                            serde_json::json!({
                                "courierUndecodable": String::from_utf8_lossy(&payload)
                            })
                        }),
                    };
                    (Some(letter), None)
                }
                // No payload left: nothing to keep.
                Err(_) => (None, None),
            };
            let letter_json = letter
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    what: "dead letter",
                    message: e.to_string(),
                })?;
            let record_json = record.as_ref().map(crate::records::encode).transpose()?;
            // Keys of a record that may not exist still need names; a placeholder id
            // names keys the script does not touch then.
            let (delivery_key, pending, job_index, delivery_id) = match &record {
                Some(r) => (
                    self.keys.delivery(&r.id),
                    self.keys.destination_pending(&r.destination_id),
                    self.keys.job_deliveries(&r.tenant, &r.job_id),
                    r.id.to_string(),
                ),
                None => (
                    self.keys.delivery_of("none"),
                    self.keys.delivery_of("none"),
                    self.keys.delivery_of("none"),
                    String::new(),
                ),
            };
            let letter_id = letter.as_ref().map(|l| l.id.clone()).unwrap_or_default();
            let n: u64 = ADOPT_DEAD_TASK
                .key(q.dead())
                .key(q.data())
                .key(q.meta(&task_id))
                .key(self.keys.dead_letter(&letter_id))
                .key(self.keys.dead_letters())
                .key(delivery_key)
                .key(pending)
                .key(job_index)
                .arg(&task_id)
                .arg(letter_json.unwrap_or_default())
                .arg(&letter_id)
                .arg(now.timestamp_millis())
                .arg(self.retention.as_secs())
                .arg(record_json.unwrap_or_default())
                .arg(delivery_id)
                .invoke_async(conn)
                .await?;
            if n == 1 {
                tracing::warn!(
                    task_id,
                    dead_letter = letter_id,
                    "a task the queue gave up on became a dead letter"
                );
            }
            moved += n;
        }
        Ok(moved)
    }

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
