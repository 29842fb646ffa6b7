//! Batched destinations in Redis: the open windows (a list of entries and a hash of
//! counters each), the set of open windows by when they may be closed, the claim of the
//! worker closing one, and the batch records the inspector lists.
//!
//! An entry is one delivery's rows: its delivery id, a newline, then its NDJSON lines
//! (each ending with a newline). Appending the entry and writing the delivery's `BATCHED`
//! record are one script ([`BatchStore::append`]), so a window never holds rows without
//! their record, nor a record rows that are in no window.

use chrono::{DateTime, TimeZone, Utc};
use courier_core::batch::{BatchRecord, BatchRef, GRACE_SECONDS};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus};
use courier_core::{DestinationId, TenantId};
use redis::AsyncCommands;

use crate::records::encode;
use crate::scripts::{
    BATCH_APPEND, BATCH_CLAIM, BATCH_DONE, BATCH_FAIL, BATCH_RENEW, BATCH_REOPEN, BATCH_RETRY,
};
use crate::{Full, Keys, Page, RedisConn, StoreError};

/// One open window of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowId {
    pub destination_id: DestinationId,
    /// Unix seconds.
    pub start: i64,
}

impl WindowId {
    /// Its member in the set of open windows: `{destination id} {start}`.
    pub fn member(&self) -> String {
        format!("{} {}", self.destination_id, self.start)
    }

    /// The id of the dead letter of this window, once it failed for good.
    pub fn letter_id(&self) -> String {
        format!("batch_{}_{}", self.destination_id, self.start)
    }

    pub fn parse_member(member: &str) -> Option<Self> {
        let (d, s) = member.split_once(' ')?;
        Some(Self {
            destination_id: DestinationId::parse(d).ok()?,
            start: s.parse().ok()?,
        })
    }
}

/// An open window, as its claim found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedWindow {
    pub id: WindowId,
    /// Unix seconds.
    pub end: i64,
    pub rows: u64,
    pub bytes: u64,
    pub entries: u64,
    /// Tries at closing it made before this one.
    pub attempts: u32,
    /// When the first try started (unix s), 0 before any.
    pub first_attempt_at: i64,
    /// Redis's clock when it was claimed (unix s).
    pub now: i64,
}

/// What [`BatchStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowClaim {
    Claimed(ClaimedWindow),
    /// Another worker holds it.
    Busy,
    /// Not due yet by Redis's clock.
    NotDue,
    /// Closed already (or never opened).
    Gone,
}

/// One entry read back from a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub delivery_id: String,
    /// Its NDJSON lines, each ending with a newline.
    pub lines: Vec<u8>,
    pub line_count: u64,
}

impl Entry {
    /// An entry as stored: `{delivery id}\n{lines}`.
    pub fn encode(delivery_id: &str, lines: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(delivery_id.len() + 1 + lines.len());
        out.extend_from_slice(delivery_id.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(lines);
        out
    }

    pub fn decode(raw: Vec<u8>) -> Result<Self, StoreError> {
        let Some(nl) = raw.iter().position(|b| *b == b'\n') else {
            return Err(StoreError::Corrupt {
                what: "batch entry",
                message: "no delivery id line".into(),
            });
        };
        let delivery_id = String::from_utf8_lossy(&raw[..nl]).into_owned();
        let lines = raw[nl + 1..].to_vec();
        let line_count = lines.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(Self {
            delivery_id,
            lines,
            line_count,
        })
    }
}

/// Why [`BatchStore::append`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRefused {
    /// The tenant has as many deliveries waiting as it may.
    Full(Full),
}

/// The windows of batched destinations, and their batch records.
#[derive(Debug, Clone)]
pub struct BatchStore {
    conn: RedisConn,
    keys: Keys,
    /// How long a batch record is kept; `None` keeps them forever.
    retention: Option<std::time::Duration>,
}

impl BatchStore {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            retention: None,
        }
    }

    /// Batch records expire this long after they were written (as final delivery
    /// records do).
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Appends `lines` (NDJSON, `rows` of them) of the delivery `record` to its batched
    /// destination's open window, and writes the record `BATCHED` with its window, its
    /// index entries and its place in the tenant's quota, in one script; answers once Redis
    /// holds them. The window is chosen by the script from Redis's clock; `record` is
    /// returned as written. Nothing is written when the tenant is full.
    pub async fn append(
        &self,
        mut record: DeliveryRecord,
        window_seconds: u32,
        lines: &[u8],
        rows: u64,
        max_waiting: u64,
    ) -> Result<Result<DeliveryRecord, AppendRefused>, StoreError> {
        let dest = record.destination_id.clone();
        let entry = Entry::encode(record.id.as_str(), lines);
        let mut start = courier_core::batch::window_start(Utc::now().timestamp(), window_seconds);
        // The caller's clock guesses the window; the script says if Redis's disagrees.
        for _ in 0..5 {
            let w = WindowId {
                destination_id: dest.clone(),
                start,
            };
            record.batched(
                BatchRef {
                    window_start: at(start),
                    window_end: at(start + i64::from(window_seconds)),
                    id: None,
                    key: None,
                    first_line: None,
                    last_line: None,
                },
                Utc::now(),
            );
            let json = encode(&record)?;
            let mut conn = self.conn.clone();
            let answer: Vec<i64> = BATCH_APPEND
                .key(self.keys.delivery(&record.id))
                .key(self.keys.tenant_waiting(&record.tenant))
                .key(self.keys.destination_pending(&dest))
                .key(self.keys.tenant_deliveries(&record.tenant))
                .key(self.keys.destination_deliveries(&dest))
                .key(self.keys.job_deliveries(&record.tenant, &record.job_id))
                .key(
                    self.keys
                        .tenant_status_deliveries(&record.tenant, DeliveryStatus::Batched),
                )
                .key(self.keys.delivery_indexes())
                .key(self.keys.batch_sealed(&dest))
                .key(self.keys.batch_entries(&dest, start))
                .key(self.keys.batch_window(&dest, start))
                .key(self.keys.batch_due())
                .arg(record.id.as_str())
                .arg(json)
                .arg(max_waiting)
                .arg(window_seconds)
                .arg(start)
                .arg(entry.as_slice())
                .arg(rows)
                .arg(lines.len())
                .arg(w.member())
                .arg(GRACE_SECONDS)
                .invoke_async(&mut conn)
                .await?;
            match answer.as_slice() {
                [1, ..] => return Ok(Ok(record)),
                [0, used, ..] => {
                    return Ok(Err(AppendRefused::Full(Full {
                        used: u64::try_from(*used).unwrap_or(0),
                    })));
                }
                [-1, other, ..] => start = *other,
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "batch append answer",
                        message: format!("{answer:?}"),
                    });
                }
            }
        }
        Err(StoreError::Corrupt {
            what: "batch window",
            message: "the window moved on five times in a row".into(),
        })
    }

    /// Open windows due by `now` (unix s, the caller's clock; the claim checks Redis's),
    /// most overdue first, skipping the first `offset`, at most `limit`.
    pub async fn due(
        &self,
        now: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(WindowId, i64)>, StoreError> {
        let mut conn = self.conn.clone();
        let found: Vec<(String, i64)> = conn
            .zrangebyscore_limit_withscores(
                self.keys.batch_due(),
                "-inf",
                now,
                offset as isize,
                limit as isize,
            )
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(m, s)| WindowId::parse_member(&m).map(|w| (w, s)))
            .collect())
    }

    /// Claims window `w` for `token` for `ttl` (renew with [`renew`](Self::renew)), if it is
    /// due by Redis's clock and nobody else holds it; seals it, so that later appends go to
    /// later windows.
    pub async fn claim(
        &self,
        w: &WindowId,
        token: &str,
        ttl: std::time::Duration,
    ) -> Result<WindowClaim, StoreError> {
        let mut conn = self.conn.clone();
        let r: Vec<i64> = BATCH_CLAIM
            .key(self.keys.batch_claim(&w.destination_id, w.start))
            .key(self.keys.batch_window(&w.destination_id, w.start))
            .key(self.keys.batch_sealed(&w.destination_id))
            .key(self.keys.batch_due())
            .arg(token)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(w.start)
            .arg(w.member())
            .invoke_async(&mut conn)
            .await?;
        Ok(match r.as_slice() {
            [1, end, rows, bytes, entries, attempts, first, now] => {
                WindowClaim::Claimed(ClaimedWindow {
                    id: w.clone(),
                    end: *end,
                    rows: u64::try_from(*rows).unwrap_or(0),
                    bytes: u64::try_from(*bytes).unwrap_or(0),
                    entries: u64::try_from(*entries).unwrap_or(0),
                    attempts: u32::try_from(*attempts).unwrap_or(0),
                    first_attempt_at: *first,
                    now: *now,
                })
            }
            [0] => WindowClaim::Busy,
            [-1] => WindowClaim::NotDue,
            _ => WindowClaim::Gone,
        })
    }

    /// Keeps `token`'s claim on `w` for another `ttl`; false if it was lost.
    pub async fn renew(
        &self,
        w: &WindowId,
        token: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let held: i64 = BATCH_RENEW
            .key(self.keys.batch_claim(&w.destination_id, w.start))
            .arg(token)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Entries `from..from + count` of window `w`, in append order.
    pub async fn entries(
        &self,
        w: &WindowId,
        from: u64,
        count: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = conn
            .lrange(
                self.keys.batch_entries(&w.destination_id, w.start),
                from as isize,
                (from + count) as isize - 1,
            )
            .await?;
        raw.into_iter().map(Entry::decode).collect()
    }

    /// Ends window `w` after its objects landed: its entries, hash and claim are deleted.
    /// False if `token` lost the claim (nothing deleted).
    pub async fn done(&self, w: &WindowId, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ended: i64 = BATCH_DONE
            .key(self.keys.batch_claim(&w.destination_id, w.start))
            .key(self.keys.batch_window(&w.destination_id, w.start))
            .key(self.keys.batch_entries(&w.destination_id, w.start))
            .key(self.keys.batch_due())
            .arg(token)
            .arg(w.member())
            .invoke_async(&mut conn)
            .await?;
        Ok(ended == 1)
    }

    /// Another try at `due_at` (unix s) after a transient failure; the claim is given up.
    pub async fn retry_later(
        &self,
        w: &WindowId,
        token: &str,
        due_at: i64,
        attempts: u32,
        first_attempt_at: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ok: i64 = BATCH_RETRY
            .key(self.keys.batch_claim(&w.destination_id, w.start))
            .key(self.keys.batch_window(&w.destination_id, w.start))
            .key(self.keys.batch_due())
            .arg(token)
            .arg(w.member())
            .arg(due_at)
            .arg(attempts)
            .arg(first_attempt_at)
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// Gives window `w` up after a permanent failure: kept (for a replay) but not open.
    pub async fn fail(&self, w: &WindowId, token: &str, attempts: u32) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ok: i64 = BATCH_FAIL
            .key(self.keys.batch_claim(&w.destination_id, w.start))
            .key(self.keys.batch_window(&w.destination_id, w.start))
            .key(self.keys.batch_due())
            .arg(token)
            .arg(w.member())
            .arg(attempts)
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// Opens a failed window again, due now; false if it is gone.
    pub async fn reopen(&self, w: &WindowId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ok: i64 = BATCH_REOPEN
            .key(self.keys.batch_window(&w.destination_id, w.start))
            .key(self.keys.batch_due())
            .arg(w.member())
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    /// Writes (or overwrites: a redone window writes the same ids) batch records.
    pub async fn put_records(&self, records: &[BatchRecord]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in records {
            let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt {
                what: "batch record",
                message: e.to_string(),
            })?;
            match self.retention {
                Some(keep) => pipe.set_ex(self.keys.batch_record(&r.id), json, keep.as_secs()),
                None => pipe.set(self.keys.batch_record(&r.id), json),
            };
            let score = r.window_start.timestamp() * 10_000 + i64::from(r.sequence);
            let index = self.keys.destination_batches(&r.destination_id);
            pipe.zadd(&index, &r.id, score);
            // Entries of records past their retention leave the index as new ones come.
            if let Some(keep) = self.retention {
                let oldest = (Utc::now().timestamp() - keep.as_secs() as i64) * 10_000;
                pipe.zrembyscore(&index, "-inf", format!("({oldest}"));
            }
        }
        let mut conn = self.conn.clone();
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// A page of `tenant`'s destination's batch records, newest window first. `cursor`
    /// is the previous page's `next_cursor`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        destination: &DestinationId,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<Page<BatchRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let index = self.keys.destination_batches(destination);
        let from = cursor.unwrap_or(0);
        let ids: Vec<String> = conn
            .zrevrange(&index, from as isize, (from + limit as u64) as isize - 1)
            .await?;
        let mut items = Vec::with_capacity(ids.len());
        for id in &ids {
            let json: Option<String> = conn.get(self.keys.batch_record(id)).await?;
            // An expired record leaves its id behind; drop it from the index.
            let Some(json) = json else {
                let _: () = conn.zrem(&index, id).await?;
                continue;
            };
            let r: BatchRecord = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                what: "batch record",
                message: e.to_string(),
            })?;
            if &r.tenant == tenant {
                items.push(r);
            }
        }
        let next_cursor = (ids.len() == limit).then(|| (from + limit as u64).to_string());
        Ok(Page { items, next_cursor })
    }

    /// How many entries window `w` still holds in Redis (0 once it was closed).
    pub async fn entry_count(&self, w: &WindowId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .llen(self.keys.batch_entries(&w.destination_id, w.start))
            .await?)
    }
}

/// Unix seconds as a time.
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}
