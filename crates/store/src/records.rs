//! Delivery records: one JSON string per delivery, and lex-ordered indexes of ids (ULIDs
//! sort by enqueue time) per tenant, per tenant and status, per destination and per job,
//! plus the set of a destination's deliveries that are not final yet and the set of a
//! tenant's waiting deliveries (its quota's count).
//!
//! Every write of a record moves its index entries in the same `MULTI` (or script), so an
//! index never disagrees with the records for long: a listing reads one index of the
//! caller's tenant and never another tenant's entries.

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus};
use courier_core::{DeliveryId, DestinationId, TenantId};
use redis::AsyncCommands;

use crate::scripts::{RECORD_PUT, RECORD_PUT_SOURCE, RECORD_QUEUED};
use crate::{Full, Keys, StoreError};

/// How many keys `lib/record_write.lua` takes: eight, and the indexes of every status but
/// the record's.
pub(crate) const RECORD_KEYS: usize = 8 + DeliveryStatus::ALL.len() - 1;

/// Reads and writes delivery records.
#[derive(Debug, Clone)]
pub struct RecordStore {
    conn: RedisConn,
    keys: Keys,
    /// How long a final record is kept; `None` keeps records forever.
    retention: Option<std::time::Duration>,
}

/// Which records to list; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub destination_id: Option<DestinationId>,
    pub job_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// Enqueued at or after.
    pub from: Option<DateTime<Utc>>,
    /// Enqueued before.
    pub to: Option<DateTime<Utc>>,
}

/// One page of records, newest first, and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl RecordStore {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            retention: None,
        }
    }

    /// The key names this store writes under.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A handle on the connection.
    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Final records (and job indexes) expire this long after their last write.
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The batched destinations' windows and batch records, over the same Redis (batch
    /// records kept as long as final delivery records).
    pub fn batches(&self) -> crate::BatchStore {
        let store = crate::BatchStore::new(self.conn.clone(), self.keys.clone());
        match self.retention {
            Some(keep) => store.with_retention(keep),
            None => store,
        }
    }

    /// Writes (or overwrites) a record and keeps its indexes in step: one script
    /// (`record_put.lua`), one command sent.
    pub async fn put(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let (keys, args) = self.write_parts(record)?;
        let mut invocation = RECORD_PUT.prepare_invoke();
        for k in &keys {
            invocation.key(k);
        }
        for a in &args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Adds [`put`](Self::put)'s script to `pipe` (as `EVAL`, its source in full: in a
    /// `MULTI` block a script Redis does not know could not be loaded first), so that a
    /// record can be written in one transaction with something else (its task:
    /// [`crate::DeliveryQueue::push_with_record`]).
    pub(crate) fn put_into(
        &self,
        pipe: &mut redis::Pipeline,
        record: &DeliveryRecord,
    ) -> Result<(), StoreError> {
        let (keys, args) = self.write_parts(record)?;
        pipe.cmd("EVAL")
            .arg(RECORD_PUT_SOURCE)
            .arg(keys.len())
            .arg(&keys)
            .arg(&args)
            .ignore();
        Ok(())
    }

    /// The keys and arguments of `lib/record_write.lua` for `record` (what `record_put.lua`
    /// and `finish.lua` take first): [`RECORD_KEYS`] keys and 4 arguments.
    pub(crate) fn write_parts(
        &self,
        record: &DeliveryRecord,
    ) -> Result<(Vec<String>, [String; 4]), StoreError> {
        let json = encode(record)?;
        let tenant = &record.tenant;
        let mut keys = vec![
            self.keys.delivery(&record.id),
            self.keys.job_deliveries(tenant, &record.job_id),
            self.keys.tenant_deliveries(tenant),
            self.keys.destination_deliveries(&record.destination_id),
            self.keys.tenant_status_deliveries(tenant, record.status),
            self.keys.delivery_indexes(),
            self.keys.destination_pending(&record.destination_id),
            self.keys.tenant_waiting(tenant),
        ];
        // The id leaves the index of the status it had (which one is not known here).
        keys.extend(
            DeliveryStatus::ALL
                .into_iter()
                .filter(|s| *s != record.status)
                .map(|s| self.keys.tenant_status_deliveries(tenant, s)),
        );
        debug_assert_eq!(keys.len(), RECORD_KEYS);
        // Final records expire after the retention; so does a job's index once its last
        // record was written.
        let keep = self
            .retention
            .filter(|_| record.status.is_final())
            .map_or(0, |keep| keep.as_secs().max(1));
        let kind = if record.status.is_final() {
            "final"
        } else if matches!(
            record.status,
            DeliveryStatus::Queued | DeliveryStatus::Batched
        ) {
            // Only a (re-)queued (or re-batched) delivery enters the waiting count.
            "queued"
        } else {
            "open"
        };
        Ok((
            keys,
            [
                record.id.as_str().to_owned(),
                json,
                keep.to_string(),
                kind.to_owned(),
            ],
        ))
    }

    /// Writes a new delivery's `QUEUED` record and its index entries, unless `tenant` has
    /// `max_waiting` deliveries waiting already (0: no limit). The check and the write are
    /// one script: concurrent enqueues cannot both take the last place, and `Err(Full)`
    /// means nothing was written.
    pub async fn put_queued(
        &self,
        record: &DeliveryRecord,
        max_waiting: u64,
    ) -> Result<Result<(), Full>, StoreError> {
        self.put_queued_with_task(record, max_waiting, None).await
    }

    /// [`Self::put_queued`], and in the same script, when `task` (a delivery task's JSON) is
    /// given, the task pushed as apalis-redis's `batch_push.lua` pushes one to run now
    /// (see [`crate::DeliveryQueue::push_with_record`]).
    pub async fn put_queued_with_task(
        &self,
        record: &DeliveryRecord,
        max_waiting: u64,
        task: Option<&[u8]>,
    ) -> Result<Result<(), Full>, StoreError> {
        if record.status != DeliveryStatus::Queued {
            return Err(StoreError::Corrupt {
                what: "delivery record",
                message: format!("put_queued of a {} record", record.status.as_str()),
            });
        }
        let json = encode(record)?;
        let q = self.keys.queue_keys();
        let task_id = ulid::Ulid::new().to_string();
        let mut conn = self.conn.clone();
        let (written, used): (u8, u64) = RECORD_QUEUED
            .key(self.keys.delivery(&record.id))
            .key(self.keys.tenant_waiting(&record.tenant))
            .key(self.keys.destination_pending(&record.destination_id))
            .key(self.keys.tenant_deliveries(&record.tenant))
            .key(self.keys.destination_deliveries(&record.destination_id))
            .key(self.keys.job_deliveries(&record.tenant, &record.job_id))
            .key(
                self.keys
                    .tenant_status_deliveries(&record.tenant, DeliveryStatus::Queued),
            )
            .key(self.keys.delivery_indexes())
            .key(q.data())
            .key(q.meta(&task_id))
            .key(q.scheduled())
            .arg(record.id.as_str())
            .arg(json)
            .arg(max_waiting)
            .arg(if task.is_some() { task_id.as_str() } else { "" })
            .arg(task.unwrap_or_default())
            .arg(Utc::now().timestamp().max(0))
            .arg(self.keys.queue_wake_channel())
            .invoke_async(&mut conn)
            .await?;
        Ok(if written == 1 {
            Ok(())
        } else {
            Err(Full { used })
        })
    }

    /// How many of `tenant`'s deliveries wait: recorded `QUEUED` and not final yet
    /// (queued, in progress, retrying or held).
    pub async fn waiting_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.scard(self.keys.tenant_waiting(tenant)).await?)
    }

    /// Removes a record and its index entries; used when an enqueue fails after its
    /// record was written.
    pub async fn delete(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let id = record.id.as_str();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.delivery(&record.id))
            .zrem(self.keys.tenant_deliveries(&record.tenant), id)
            .zrem(self.keys.destination_deliveries(&record.destination_id), id)
            .zrem(self.keys.job_deliveries(&record.tenant, &record.job_id), id)
            .srem(self.keys.destination_pending(&record.destination_id), id)
            .srem(self.keys.tenant_waiting(&record.tenant), id);
        for status in DeliveryStatus::ALL {
            pipe.zrem(
                self.keys.tenant_status_deliveries(&record.tenant, status),
                id,
            );
        }
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// The record `id` if it belongs to `tenant`; another tenant's reads as absent.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(self.get_any(id).await?.filter(|r| &r.tenant == tenant))
    }

    /// The record `id` whatever its tenant; for workers.
    pub async fn get_any(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.delivery(id)).await?;
        json.map(|j| decode(&j)).transpose()
    }

    /// The records of `ids` whatever their tenant, in order (`None` for a missing one); one
    /// round trip.
    pub async fn get_many_any(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<DeliveryRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.delivery_of(id)).collect();
        let mut conn = self.conn.clone();
        let jsons: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        jsons
            .into_iter()
            .map(|j| j.map(|j| decode(&j)).transpose())
            .collect()
    }

    /// [`put`](Self::put) of several records in one transaction.
    pub async fn put_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in records {
            self.put_into(&mut pipe, r)?;
        }
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// How many deliveries of a destination are not final yet.
    pub async fn pending_count(&self, destination: &DestinationId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .scard(self.keys.destination_pending(destination))
            .await?)
    }

    /// A page of `tenant`'s records matching `filter`, newest first. `cursor` is the
    /// `next_cursor` of the previous page.
    ///
    /// Reads one index of `tenant`: the smallest of those the filter names (the job's, the
    /// tenant's of the status, the destination's), else the tenant's; the other filters
    /// are checked per record. A `destination_id` filter must be one of `tenant`'s
    /// destinations (the caller checks: [`crate::DestinationStore::summary`]).
    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        limit: usize,
        cursor: Option<&DeliveryId>,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        let index = self.index_for(tenant, filter).await?;
        let mut max = match cursor {
            Some(c) => format!("({c}"),
            None => match filter.to {
                Some(t) => format!("({}", id_at(t)),
                None => "+".to_owned(),
            },
        };
        let min = match filter.from {
            Some(t) => format!("[{}", id_at(t)),
            None => "-".to_owned(),
        };
        let batch = (limit * 2).clamp(16, 500);
        let mut items = Vec::with_capacity(limit);
        let mut conn = self.conn.clone();
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(0)
                .arg(batch)
                .query_async(&mut conn)
                .await?;
            let Some(last) = ids.last() else {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            };
            max = format!("({last}");
            let keys: Vec<String> = ids.iter().map(|id| self.keys.delivery_of(id)).collect();
            let jsons: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            for (id, json) in ids.iter().zip(jsons) {
                // A record that expired leaves its id behind in the index; skip it.
                let Some(json) = json else { continue };
                let record = decode(&json)?;
                if &record.tenant != tenant || !matches(&record, filter) {
                    continue;
                }
                items.push(record);
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next_cursor: Some(id.clone()),
                    });
                }
            }
            if ids.len() < batch {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }
}

impl RecordStore {
    /// The index a listing with `filter` reads: of those that apply, the one with the fewest
    /// entries (one `ZCARD` each, in one round trip).
    async fn index_for(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
    ) -> Result<String, StoreError> {
        let mut candidates = Vec::with_capacity(3);
        if let Some(j) = &filter.job_id {
            candidates.push(self.keys.job_deliveries(tenant, j));
        }
        if let Some(s) = filter.status {
            candidates.push(self.keys.tenant_status_deliveries(tenant, s));
        }
        if let Some(d) = &filter.destination_id {
            candidates.push(self.keys.destination_deliveries(d));
        }
        if candidates.len() < 2 {
            return Ok(candidates
                .pop()
                .unwrap_or_else(|| self.keys.tenant_deliveries(tenant)));
        }
        let mut pipe = redis::pipe();
        for key in &candidates {
            pipe.zcard(key);
        }
        let mut conn = self.conn.clone();
        let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
        let smallest = sizes
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (**n, *i))
            .map_or(0, |(i, _)| i);
        Ok(candidates.swap_remove(smallest))
    }
}

/// The smallest delivery id of instant `t`, for lexicographic range bounds.
fn id_at(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(ms, 0);
    format!("{}{ulid}", DeliveryId::PREFIX)
}

fn matches(r: &DeliveryRecord, f: &RecordFilter) -> bool {
    f.destination_id
        .as_ref()
        .is_none_or(|d| &r.destination_id == d)
        && f.job_id.as_ref().is_none_or(|j| &r.job_id == j)
        && f.status.is_none_or(|s| r.status == s)
        && f.from.is_none_or(|t| r.enqueued_at >= t)
        && f.to.is_none_or(|t| r.enqueued_at < t)
}

pub(crate) fn encode(record: &DeliveryRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
        what: "delivery record",
        message: e.to_string(),
    })
}

pub(crate) fn decode(json: &str) -> Result<DeliveryRecord, StoreError> {
    serde_json::from_str::<DeliveryRecord>(json).map_err(|e| StoreError::Corrupt {
        what: "delivery record",
        message: e.to_string(),
    })
}
