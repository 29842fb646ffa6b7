//! The delivery queue: apalis-redis storage under Courier's namespace.
//!
//! Producers push [`DeliveryTask`]s; workers pull them as raw JSON and decode them
//! themselves, so that a corrupt payload is Courier's to report rather than a codec
//! failure inside apalis.

use std::time::Duration;

use crate::RedisConn;
use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::{Config, RedisStorage};
use chrono::{DateTime, Utc};
use courier_core::delivery::DeliveryTask;

use crate::scripts::{HAND_BACK, PROMOTE_DUE, STORAGE_RETRY};
use crate::{Keys, RecordStore, StoreError};
use courier_core::delivery::DeliveryRecord;

/// How long a worker may go silent before its in-flight tasks are handed to others.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often a worker reports that it is alive.
    pub heartbeat: Duration,
    /// How many reports may be missed before the worker counts as dead.
    pub missed_heartbeats: usize,
}

impl Default for Liveness {
    /// 5 s × 6 = 30 s until a dead worker's tasks move, instead of apalis's 5 minutes.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 6,
        }
    }
}

/// Due tasks [`DeliveryQueue::promote_due`] moves per script call: well under the ~8,000
/// values Lua's `unpack` takes, and short enough not to hold Redis up.
pub const PROMOTE_STEP: u64 = 1000;

/// The apalis-redis configuration both sides of the queue must agree on.
pub fn queue_config(keys: &Keys, liveness: Liveness, batch_size: usize) -> Config {
    Config::default()
        .queue(keys.queue())
        .heartbeat_interval(liveness.heartbeat)
        .missed_heartbeats(liveness.missed_heartbeats)
        .batch_size(batch_size.max(1))
        .emit_events(false)
        // apalis-redis's task "leases" add nothing Courier relies on (a dead worker's tasks
        // are re-queued from its in-flight set, leased or not), and taking one runs
        // `LREM` over the whole waiting list for a task `fetch_next` already removed from
        // it: with 50,000 deliveries waiting that was 1.7 ms of Redis CPU per delivery,
        // so a backlog drained ever slower the bigger it was.
        .lock_tasks(false)
}

/// The producer side of the queue.
#[derive(Debug, Clone)]
pub struct DeliveryQueue {
    storage: RedisStorage<DeliveryTask, RedisConn>,
    /// For Courier's own writes to the queue's keys.
    conn: RedisConn,
    keys: Keys,
}

impl DeliveryQueue {
    pub fn new(conn: RedisConn, keys: &Keys) -> Self {
        let config = queue_config(keys, Liveness::default(), 1);
        Self {
            storage: RedisStorage::new(conn.clone()).with_config(config),
            conn,
            keys: keys.clone(),
        }
    }

    /// Pushes one task; returns once Redis holds it.
    pub async fn push(&self, task: DeliveryTask) -> Result<(), StoreError> {
        let mut storage = self.storage.clone();
        storage
            .push(task)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }

    /// Writes `record` and pushes its `task` in one transaction (`MULTI`/`EXEC`): both are
    /// in Redis or neither is, so no crash or refused write can leave a `QUEUED` record
    /// without its task. Returns once Redis holds both.
    pub async fn push_with_record(
        &self,
        records: &RecordStore,
        record: &DeliveryRecord,
        task: &DeliveryTask,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        records.put_into(&mut pipe, record)?;
        self.push_into(&mut pipe, task)?;
        let mut conn = self.conn.clone();
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// [`Self::push_with_record`] within the tenant's quota of waiting deliveries
    /// (`max_waiting`; 0 for none): the check, the record and the task in one script
    /// ([`crate::RecordStore::put_queued_with_task`]), so two concurrent enqueues cannot
    /// both take the last place and no crash leaves a record without its task.
    pub async fn push_within(
        &self,
        records: &RecordStore,
        record: &DeliveryRecord,
        task: &DeliveryTask,
        max_waiting: u64,
    ) -> Result<Result<(), crate::Full>, StoreError> {
        let payload = courier_core::payload::encode(task).map_err(|e| StoreError::Corrupt {
            what: "delivery task",
            message: e.to_string(),
        })?;
        records
            .put_queued_with_task(record, max_waiting, Some(&payload))
            .await
    }

    /// Adds to `pipe` what apalis-redis's `batch_push.lua` does for one task pushed to run
    /// now, under the same keys (read through [`crate::QueueKeys`]): its payload in the
    /// data hash, its metadata hash (no attempts yet, apalis's default of 25 at most,
    /// pending, no idempotency key), and its id in the scheduled set, due now (apalis's
    /// push gives every task a run time, the current second by default, and its fetch
    /// promotes due tasks to the active list), then announces it to idle workers
    /// ([`crate::Keys::queue_wake_channel`]). Returns the task's id.
    pub(crate) fn push_into(
        &self,
        pipe: &mut redis::Pipeline,
        task: &DeliveryTask,
    ) -> Result<String, StoreError> {
        let payload = courier_core::payload::encode(task).map_err(|e| StoreError::Corrupt {
            what: "delivery task",
            message: e.to_string(),
        })?;
        let id = ulid::Ulid::new().to_string();
        let q = self.keys.queue_keys();
        pipe.hset_nx(q.data(), &id, payload)
            .hset_multiple(
                q.meta(&id),
                &[
                    ("attempts", "0"),
                    ("max_attempts", "25"),
                    ("status", "Pending"),
                    ("idempotency_key", ""),
                ],
            )
            .zadd(q.scheduled(), &id, Utc::now().timestamp().max(0))
            .publish(self.keys.queue_wake_channel(), 1)
            .ignore();
        Ok(id)
    }

    /// After Courier's own storage failed while handling `task`: schedules it again at
    /// `at` (a new apalis task; the caller lets apalis finish the one it ran) and, when
    /// `record` is given, writes it with the failed attempt. One script, allowed to run
    /// when Redis is at `maxmemory` (see `lua/storage_retry.lua`), so that the retry
    /// follows Courier's policy even then.
    pub async fn retry_after_storage_failure(
        &self,
        record: Option<&DeliveryRecord>,
        task: &DeliveryTask,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = courier_core::payload::encode(task).map_err(|e| StoreError::Corrupt {
            what: "delivery task",
            message: e.to_string(),
        })?;
        let json = record.map(crate::records::encode).transpose()?;
        let id = ulid::Ulid::new().to_string();
        let q = self.keys.queue_keys();
        let due = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let mut conn = self.conn.clone();
        let _: i64 = STORAGE_RETRY
            .key(self.keys.delivery(&task.delivery_id))
            .key(self.keys.destination_pending(&task.destination_id))
            .key(q.data())
            .key(q.meta(&id))
            .key(q.scheduled())
            .arg(json.unwrap_or_default())
            .arg(task.delivery_id.as_str())
            .arg(&id)
            .arg(payload)
            .arg(due.max(0))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Pushes one task to run no earlier than `at`. apalis-redis schedules in whole
    /// seconds, so `at` is rounded up to the next second.
    pub async fn schedule(&self, task: DeliveryTask, at: DateTime<Utc>) -> Result<(), StoreError> {
        let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let task = TaskBuilder::new(task)
            .run_at_timestamp(u64::try_from(secs).unwrap_or(0))
            .build();
        let mut storage = self.storage.clone();
        storage
            .push_task(task)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }

    /// Marks `worker` alive now, if it is registered. apalis only beats when it polls for
    /// more work, so a worker whose every slot is busy with long uploads would look dead
    /// and lose its tasks; Courier beats on its own clock as well.
    pub async fn keep_alive(&self, conn: &mut RedisConn, worker: &str) -> Result<(), StoreError> {
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.queue_keys().workers())
            .arg("XX")
            .arg(now)
            .arg(worker)
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Moves every task due now from the scheduled set to the active list, at most
    /// [`PROMOTE_STEP`] per script call; returns how many moved. apalis-redis's fetch
    /// promotes all due tasks in one call that fails for good past about 8,000 of them (a
    /// backlog enqueued while no worker ran, or a storm of retries come due at once), so a
    /// worker calls this before it fetches and on every heartbeat.
    pub async fn promote_due(&self, conn: &mut RedisConn) -> Result<u64, StoreError> {
        let q = self.keys.queue_keys();
        let now = Utc::now().timestamp().max(0);
        let mut moved = 0;
        loop {
            let n: u64 = PROMOTE_DUE
                .key(q.scheduled())
                .key(q.active())
                .key(q.signal())
                .arg(now)
                .arg(PROMOTE_STEP)
                .invoke_async(conn)
                .await?;
            moved += n;
            if n < PROMOTE_STEP {
                return Ok(moved);
            }
        }
    }

    /// Hands the tasks in `worker`'s in-flight set back to the queue at once and removes
    /// the worker from the live set: for a worker that stops before finishing them, so the
    /// fleet need not wait for its heartbeat to expire. Returns how many were handed back.
    pub async fn hand_back(&self, conn: &mut RedisConn, worker: &str) -> Result<u64, StoreError> {
        let q = self.keys.queue_keys();
        Ok(HAND_BACK
            .key(q.inflight(worker))
            .key(q.active())
            .key(q.workers())
            .key(q.signal())
            .arg(worker)
            .invoke_async(conn)
            .await?)
    }
}
