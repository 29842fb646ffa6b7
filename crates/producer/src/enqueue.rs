//! Turning a validated "job completed" into a queued delivery task and its record.

use std::time::Duration;

use chrono::Utc;
use courier_core::batch::{BatchSettings, ndjson_lines};
use courier_core::delivery::{DeliveryRecord, DeliveryTask, JobCompleted, RowsSource};
use courier_core::{Compression, DeliveryId, DestinationId, Format, TenantId, ValidationErrors};
use courier_store::{
    AppendRefused, DeliveryQueue, DestinationStore, Idempotency, KeyClaim, RecordStore, RedisConn,
    StoreError, wait_for_replicas,
};
use sha2::{Digest, Sha256};

use crate::service::Rules;

/// Why a delivery was not enqueued. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("destination {0} does not exist")]
    DestinationNotFound(DestinationId),
    /// The job breaks a rule the request's own validation cannot see (where its rows are).
    #[error("invalid delivery: {0}")]
    Invalid(ValidationErrors),
    /// The tenant has as many deliveries waiting as `COURIER_MAX_WAITING_PER_TENANT`
    /// allows; nothing was queued.
    #[error(
        "{waiting} deliveries of this tenant are waiting, the most it may have \
         ({limit}); retry once some are delivered"
    )]
    TooManyWaiting { waiting: u64, limit: u64 },
    /// The `Idempotency-Key` was used with another request in the last 24 hours.
    #[error("the Idempotency-Key was already used for a different request in the last 24 hours")]
    IdempotencyMismatch,
    /// An earlier request with the same `Idempotency-Key` is still being queued.
    #[error("a request with this Idempotency-Key is still being queued; retry in a moment")]
    IdempotencyInProgress,
    /// Redis holds the delivery but fewer replicas than asked for acknowledged it in time:
    /// a failover now could lose it. Retrying with the same `Idempotency-Key` is safe.
    #[error(
        "the delivery was queued but only {acked} of {wanted} replicas acknowledged it in \
         time; retry with the same Idempotency-Key"
    )]
    NotReplicated { wanted: u32, acked: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an enqueue with an idempotency key answered.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub record: DeliveryRecord,
    /// True when the key stood for an earlier request: `record` is that request's delivery,
    /// and nothing new was queued.
    pub replayed: bool,
}

/// `COURIER_REDIS_WAIT_REPLICAS`: answer only once this many replicas have the delivery.
#[derive(Debug, Clone)]
pub struct ReplicaWait {
    /// The connection the producer's writes went through (WAIT covers its writes).
    pub conn: RedisConn,
    pub replicas: u32,
    pub timeout: Duration,
}

/// How long a request waits for an earlier one with the same key to finish queuing.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// Enqueues deliveries. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Producer {
    destinations: DestinationStore,
    records: RecordStore,
    queue: DeliveryQueue,
    rules: Rules,
    idempotency: Option<Idempotency>,
    replicas: Option<ReplicaWait>,
}

impl Producer {
    /// A producer over these stores that enforces `rules` (`Rules::default()` is strict:
    /// no private row URLs, no `s3://` rows without a staging bucket).
    pub fn new(
        destinations: DestinationStore,
        records: RecordStore,
        queue: DeliveryQueue,
        rules: Rules,
    ) -> Self {
        Self {
            destinations,
            records,
            queue,
            rules,
            idempotency: None,
            replicas: None,
        }
    }

    /// Honours idempotency keys ([`Producer::enqueue_idempotent`]) with these records.
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// Answers only once `wait.replicas` replicas acknowledged the delivery.
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replicas = wait.filter(|w| w.replicas > 0);
        self
    }

    /// [`Producer::enqueue`], at most once per `key` and `tenant` within 24 hours: a repeat
    /// with the same job answers with the first delivery (`replayed`), a repeat with
    /// another job is [`EnqueueError::IdempotencyMismatch`]. Concurrent repeats queue one
    /// delivery between them. Without a key, a plain enqueue.
    pub async fn enqueue_idempotent(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
        key: Option<&str>,
    ) -> Result<Enqueued, EnqueueError> {
        let (Some(key), Some(idem)) = (key, &self.idempotency) else {
            let record = self.enqueue(tenant, job).await?;
            return Ok(Enqueued {
                record,
                replayed: false,
            });
        };
        let fingerprint = fingerprint(&job);
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
        loop {
            match idem.claim(tenant, key, &fingerprint).await? {
                KeyClaim::Claimed => break,
                KeyClaim::Mismatch => return Err(EnqueueError::IdempotencyMismatch),
                KeyClaim::Replay(id) => {
                    let Some(record) = self.records.get(tenant, &id).await? else {
                        // The first delivery's record is gone (past its retention): the
                        // key stands for nothing any more.
                        idem.release(tenant, key).await?;
                        continue;
                    };
                    self.wait_for_replicas().await?;
                    return Ok(Enqueued {
                        record,
                        replayed: true,
                    });
                }
                KeyClaim::InProgress if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                KeyClaim::InProgress => return Err(EnqueueError::IdempotencyInProgress),
            }
        }
        let record = match self.enqueue_unreplicated(tenant, job).await {
            Ok(r) => r,
            Err(e) => {
                if let Err(release) = idem.release(tenant, key).await {
                    tracing::warn!(error = %release, "could not release an idempotency key after a failed enqueue; it lapses in a minute");
                }
                return Err(e);
            }
        };
        idem.complete(tenant, key, &fingerprint, &record.id).await?;
        self.wait_for_replicas().await?;
        Ok(Enqueued {
            record,
            replayed: false,
        })
    }

    async fn wait_for_replicas(&self) -> Result<(), EnqueueError> {
        let Some(w) = &self.replicas else {
            return Ok(());
        };
        let mut conn = w.conn.clone();
        match wait_for_replicas(&mut conn, w.replicas, w.timeout).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotReplicated { wanted, acked }) => {
                Err(EnqueueError::NotReplicated { wanted, acked })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Queues one delivery of `job` for `tenant` and returns its record.
    ///
    /// The rows must be where the workers may read them for `tenant`
    /// ([`Rules::check_rows`]), and the
    /// destination must be `tenant`'s.
    ///
    /// The record (status `QUEUED`) and the task are written in one script, so a caller that
    /// gets an error may simply retry: nothing was left behind, and no crash can leave a
    /// record without its task. Returns only once Redis holds both.
    ///
    /// They are written only while the tenant has fewer deliveries waiting than
    /// [`crate::Quotas::max_waiting_per_tenant`]: checked and counted in the same script, so
    /// two concurrent enqueues cannot both take the last place
    /// ([`EnqueueError::TooManyWaiting`]; nothing is queued).
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
    ) -> Result<DeliveryRecord, EnqueueError> {
        let record = self.enqueue_unreplicated(tenant, job).await?;
        self.wait_for_replicas().await?;
        Ok(record)
    }

    async fn enqueue_unreplicated(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
    ) -> Result<DeliveryRecord, EnqueueError> {
        self.rules
            .check_rows(tenant, &job.rows)
            .await
            .map_err(EnqueueError::Invalid)?;
        let destination = self
            .destinations
            .summary(tenant, &job.destination_id)
            .await?
            .ok_or_else(|| EnqueueError::DestinationNotFound(job.destination_id.clone()))?;
        if let Some(batch) = destination.batch {
            return self.append(tenant, job, batch).await;
        }
        let now = Utc::now();
        let id = DeliveryId::generate();
        let row_count = job.rows.count();
        let (rows, rows_url) = match job.rows {
            RowsSource::Inline { rows, .. } => (rows, None),
            RowsSource::Url(url) => (Default::default(), Some(url)),
        };
        let task = DeliveryTask {
            delivery_id: id,
            tenant: tenant.clone(),
            destination_id: job.destination_id,
            job_id: job.job_id,
            partner_inventory_id: job.partner_inventory_id,
            completed_at: job.completed_at,
            columns: job.columns,
            rows,
            rows_url,
            column_types: job.column_types,
            enqueued_at: now,
            retry: Default::default(),
        };
        let record = DeliveryRecord::queued(
            &task,
            destination.format,
            destination.compression,
            row_count,
            now,
        );
        // One script: the quota, the record and the task; a crash or a refused write leaves
        // neither the record nor the task.
        let limit = self.rules.quotas.max_waiting_per_tenant;
        if let Err(full) = self
            .queue
            .push_within(&self.records, &record, &task, limit)
            .await?
        {
            return Err(EnqueueError::TooManyWaiting {
                waiting: full.used,
                limit,
            });
        }
        crate::telemetry::enqueued();
        Ok(record)
    }
}

impl Producer {
    /// A delivery to a batched destination: its rows, rendered as NDJSON lines, are
    /// appended to the destination's open window, and its `BATCHED` record written, in one
    /// script ([`courier_store::BatchStore::append`]); no task is queued (the window's
    /// closer delivers it). Rows by reference are refused (`rowsUrl`): a window holds its
    /// rows in Redis until it closes. So are rows whose NDJSON alone exceeds the
    /// destination's `maxObjectBytes`.
    async fn append(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
        batch: BatchSettings,
    ) -> Result<DeliveryRecord, EnqueueError> {
        let invalid =
            |field: &str, m: String| EnqueueError::Invalid(ValidationErrors::single(field, m));
        let rows = match &job.rows {
            RowsSource::Inline { rows, .. } => rows,
            RowsSource::Url(_) => {
                return Err(invalid(
                    "rowsUrl",
                    "a batched destination takes inline rows only (`rows`): its windows \
                     hold their rows until they close"
                        .into(),
                ));
            }
        };
        let (lines, count) = ndjson_lines(&job.columns, rows).map_err(|m| invalid("rows", m))?;
        if lines.len() as u64 > batch.max_object_bytes {
            return Err(invalid(
                "rows",
                format!(
                    "the rows take {} bytes as NDJSON, more than the destination's \
                     batch.maxObjectBytes ({})",
                    lines.len(),
                    batch.max_object_bytes
                ),
            ));
        }
        let now = Utc::now();
        let task = DeliveryTask {
            delivery_id: DeliveryId::generate(),
            tenant: tenant.clone(),
            destination_id: job.destination_id,
            job_id: job.job_id,
            partner_inventory_id: job.partner_inventory_id,
            completed_at: job.completed_at,
            columns: Vec::new(),
            rows: Default::default(),
            rows_url: None,
            column_types: Default::default(),
            enqueued_at: now,
            retry: Default::default(),
        };
        let record = DeliveryRecord::queued(&task, Format::Ndjson, Compression::Gzip, count, now);
        let limit = self.rules.quotas.max_waiting_per_tenant;
        match self
            .records
            .batches()
            .append(record, batch.window_seconds, &lines, count, limit)
            .await?
        {
            Ok(record) => {
                crate::telemetry::enqueued();
                Ok(record)
            }
            Err(AppendRefused::Full(full)) => Err(EnqueueError::TooManyWaiting {
                waiting: full.used,
                limit,
            }),
        }
    }
}

/// What makes two jobs the same request: every field, rows as the JSON text they came in.
fn fingerprint(job: &JobCompleted) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(job.destination_id.as_str().as_bytes());
    field(job.job_id.as_bytes());
    field(job.partner_inventory_id.as_str().as_bytes());
    field(job.completed_at.to_rfc3339().as_bytes());
    field(job.columns.join("\u{1f}").as_bytes());
    match &job.rows {
        RowsSource::Inline { rows, .. } => field(rows.as_json().as_bytes()),
        RowsSource::Url(url) => field(url.as_str().as_bytes()),
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
