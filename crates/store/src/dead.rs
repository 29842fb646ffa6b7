//! Dead letters: deliveries that failed for good, or task payloads that could not even be
//! read, kept with the reason so that they can be listed and replayed.

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::DestinationId;
use courier_core::delivery::DeliveryTask;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scripts::DEAD_LETTER_FROM_HELD;
use crate::{DeliveryQueue, Keys, RecordStore, StoreError};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The delivery id, or `poison_…` for a payload that was not a delivery task.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<DestinationId>,
    /// Error code (`AccessDenied`, `RetriesExhausted`, `UndecodableTask`, …).
    pub code: String,
    pub reason: String,
    pub died_at: DateTime<Utc>,
    /// The task as it was queued.
    pub payload: Value,
}

/// The window a batch window's dead letter names (`{"batchWindow": {"destinationId",
/// "windowStart"}}`).
fn batch_window_of(payload: &Value) -> Option<crate::WindowId> {
    let w = payload.get("batchWindow")?;
    Some(crate::WindowId {
        destination_id: DestinationId::parse(w.get("destinationId")?.as_str()?).ok()?,
        start: w.get("windowStart")?.as_i64()?,
    })
}

/// The dead-letter set.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    conn: RedisConn,
    keys: Keys,
    queue: DeliveryQueue,
    /// How long a dead letter is kept; `None` keeps it until replayed.
    retention: Option<std::time::Duration>,
}

/// How long a replay's claim on its letter lasts if the replay never releases it.
const REPLAY_CLAIM_MS: u64 = 30_000;

impl DeadLetters {
    pub fn new(conn: RedisConn, keys: Keys, queue: DeliveryQueue) -> Self {
        Self {
            conn,
            keys,
            queue,
            retention: None,
        }
    }

    /// Dead letters expire this long after they died.
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    pub async fn add(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let json = serde_json::to_string(letter).map_err(|e| StoreError::Corrupt {
            what: "dead letter",
            message: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match self.retention {
            Some(keep) => pipe.set_ex(
                self.keys.dead_letter(&letter.id),
                json,
                keep.as_secs().max(1),
            ),
            None => pipe.set(self.keys.dead_letter(&letter.id), json),
        };
        pipe.zadd(
            self.keys.dead_letters(),
            &letter.id,
            letter.died_at.timestamp_millis(),
        )
        .exec_async(&mut conn)
        .await?;
        Ok(())
    }

    /// Adds `letter` in place of the payload `held_json` in the held list `held`, in one
    /// step: false (and nothing written) if the payload is no longer held.
    pub(crate) async fn add_from_held(
        &self,
        held: &str,
        held_json: &str,
        letter: &DeadLetter,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(letter).map_err(|e| StoreError::Corrupt {
            what: "dead letter",
            message: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let moved: i64 = DEAD_LETTER_FROM_HELD
            .key(held)
            .key(self.keys.dead_letter(&letter.id))
            .key(self.keys.dead_letters())
            .arg(held_json)
            .arg(json)
            .arg(&letter.id)
            .arg(letter.died_at.timestamp_millis())
            .arg(self.retention.map_or(0, |keep| keep.as_secs().max(1)))
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    pub async fn get(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.dead_letter(id)).await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                what: "dead letter",
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Every dead letter, oldest first.
    pub async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.zrange(self.keys.dead_letters(), 0, -1).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(l) = self.get(&id).await? {
                out.push(l);
            }
        }
        Ok(out)
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zcard(self.keys.dead_letters()).await?)
    }

    /// Pushes the letter's task back into the queue, marks its delivery's record (if it
    /// has one) `QUEUED` again with its attempts kept (`DeliveryRecord::requeued`), and
    /// removes the letter, all in one transaction: a crash or a refused write leaves the
    /// letter as it was, and a worker that takes the task at once finds the record already
    /// `QUEUED`, never overwritten after it started. A payload that is not a delivery task
    /// cannot be replayed and stays (false).
    ///
    /// One replay of a letter runs at a time: another replay of it under way, or the letter
    /// gone already (replayed since `letter` was read), replays nothing (false), so that
    /// two callers racing (the API's retry and `courier dlq replay`, or two retries) never
    /// queue its task twice.
    pub async fn replay(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        let claim = self.keys.dead_letter_replaying(&letter.id);
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&claim)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(REPLAY_CLAIM_MS)
            .query_async(&mut conn)
            .await?;
        if taken.is_none() {
            return Ok(false);
        }
        let replayed = match conn.exists(self.keys.dead_letter(&letter.id)).await {
            Ok(true) => self.replay_claimed(letter).await,
            Ok(false) => Ok(false),
            Err(e) => Err(e.into()),
        };
        // Expires by itself if this fails: the letter, if still there, can be replayed then.
        let _: Result<(), _> = conn.del(&claim).await;
        replayed
    }

    /// [`Self::replay`], holding the letter's replay claim.
    async fn replay_claimed(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        if let Some(w) = batch_window_of(&letter.payload) {
            return self.replay_window(letter, &w).await;
        }
        let Ok(mut task) = serde_json::from_value::<DeliveryTask>(letter.payload.clone()) else {
            return Ok(false);
        };
        // A replay is a fresh run: the retry policy counts from zero again.
        task.retry = Default::default();
        let records = RecordStore::new(self.conn.clone(), self.keys.clone());
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(mut record) = records.get_any(&task.delivery_id).await? {
            record.requeued(Utc::now());
            records.put_into(&mut pipe, &record)?;
        }
        self.queue.push_into(&mut pipe, &task)?;
        pipe.del(self.keys.dead_letter(&letter.id))
            .zrem(self.keys.dead_letters(), &letter.id);
        let mut conn = self.conn.clone();
        pipe.exec_async(&mut conn).await?;
        Ok(true)
    }

    /// A failed batch window's letter: its deliveries go back to `BATCHED`, the window is
    /// open again and due now, and the letter is removed. False if the window is gone.
    async fn replay_window(
        &self,
        letter: &DeadLetter,
        w: &crate::WindowId,
    ) -> Result<bool, StoreError> {
        let records = RecordStore::new(self.conn.clone(), self.keys.clone());
        let batches = crate::BatchStore::new(self.conn.clone(), self.keys.clone());
        if batches.entry_count(w).await? == 0 {
            return Ok(false);
        }
        let now = Utc::now();
        let mut from = 0;
        loop {
            let entries = batches.entries(w, from, 256).await?;
            if entries.is_empty() {
                break;
            }
            from += entries.len() as u64;
            let ids: Vec<String> = entries.into_iter().map(|e| e.delivery_id).collect();
            let mut again = Vec::with_capacity(ids.len());
            for mut r in records.get_many_any(&ids).await?.into_iter().flatten() {
                if let Some(window) = r.batch.clone() {
                    r.error = None;
                    r.batched(window, now);
                    again.push(r);
                }
            }
            records.put_many(&again).await?;
        }
        let reopened = batches.reopen(w).await?;
        if reopened {
            self.remove(&letter.id).await?;
        }
        Ok(reopened)
    }

    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.keys.dead_letter(id))
            .zrem(self.keys.dead_letters(), id)
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }
}
