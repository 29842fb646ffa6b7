//! One delivery, start to finish: decode the task, load the destination, render the
//! file, upload it (retrying transient failures), and write the record.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use courier_core::delivery::{
    Attempt, DeliveryError, DeliveryRecord, DeliveryStatus, DeliveryTask, Timings,
};
use courier_core::destination::Destination;
use courier_core::destination::DestinationStatus;
use courier_core::failure::ErrorClass;
use courier_core::key::object_key;
use courier_core::render::RenderSpec;
use courier_store::{
    DeadLetter, DeadLetters, DestinationStore, HeldDeliveries, RecordStore, StoreError,
};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use crate::render::{Rendered, render_to_spool};
use crate::telemetry::{self, InFlight, Outcome};
use courier_s3::{self as s3, PutRequest, S3Failure, S3Timeouts};

/// How a worker retries transient upload failures within one task.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second try; doubles each time, with full jitter.
    pub min_delay: Duration,
    /// Longest delay between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delays between tries: exponential, capped, jittered.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

/// Everything a worker needs to deliver; shared by all of its tasks.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub destinations: DestinationStore,
    pub records: RecordStore,
    pub held: HeldDeliveries,
    pub dead: DeadLetters,
    pub worker_name: String,
    pub spool_dir: Option<PathBuf>,
    pub timeouts: S3Timeouts,
    pub retry: RetryPolicy,
}

/// What became of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Delivered,
    Failed {
        code: String,
    },
    /// Parked until its paused destination is active again.
    Held,
    /// The payload was not a delivery task; it went to the dead letters as it was.
    Poison,
}

impl Deliverer {
    /// Handles one task payload. An `Err` means Courier's own storage failed and the task
    /// should be handed back to the queue; every other outcome is recorded.
    pub async fn handle(self: Arc<Self>, payload: Value) -> Result<Handled, StoreError> {
        let _in_flight = InFlight::enter();
        let task = match DeliveryTask::deserialize(&payload) {
            Ok(t) => t,
            Err(e) => {
                telemetry::poison();
                let id = format!("poison_{}", ulid::Ulid::new());
                tracing::error!(dead_letter = %id, error = %e, "task payload is not a delivery task; dead-lettered");
                self.dead
                    .add(&DeadLetter {
                        id,
                        destination_id: None,
                        code: "UndecodableTask".into(),
                        reason: format!("the task payload is not a delivery task: {e}"),
                        died_at: Utc::now(),
                        payload,
                    })
                    .await?;
                return Ok(Handled::Poison);
            }
        };
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %task.delivery_id,
            job_id = %task.job_id,
            destination_id = %task.destination_id
        );
        self.deliver(task, payload).instrument(span).await
    }

    async fn deliver(&self, mut task: DeliveryTask, payload: Value) -> Result<Handled, StoreError> {
        let mut record = match self.records.get_any(&task.delivery_id).await? {
            Some(r) => r,
            None => record_from_task(&task),
        };
        if record.status == DeliveryStatus::Delivered {
            tracing::info!("already delivered; skipping the duplicate task");
            return Ok(Handled::Delivered);
        }
        let Some(dest) = self.destinations.get_any(&task.destination_id).await? else {
            let err = DeliveryError {
                code: "DestinationNotFound".into(),
                message: format!("destination {} no longer exists", task.destination_id),
            };
            return self.fail(record, err, None, payload).await;
        };
        if dest.spec.status == DestinationStatus::Paused {
            return self.hold(record, &task).await;
        }
        let spec = &dest.spec;
        record.status = DeliveryStatus::InProgress;
        record.format = spec.format;
        record.compression = spec.compression;
        record.bucket = Some(spec.s3.bucket.to_string());
        let key = object_key(
            &spec.s3.path_prefix,
            &task.partner_inventory_id,
            task.completed_at,
            spec.format,
            spec.compression,
        );
        record.key = Some(key.clone());
        record.updated_at = Utc::now();
        self.records.put(&record).await?;

        let render_started = Instant::now();
        let rendered = match self.render(&dest, &mut task).await {
            Ok(r) => r,
            Err(message) => {
                let err = DeliveryError {
                    code: "RenderFailed".into(),
                    message,
                };
                return self.fail(record, err, None, payload).await;
            }
        };
        let render_took = render_started.elapsed();
        telemetry::rendered(spec.format, render_took);

        let client = s3::client(&spec.s3, self.timeouts).await;
        let req = PutRequest {
            bucket: spec.s3.bucket.as_str(),
            key: &key,
            content_type: spec.format.content_type(),
            content_encoding: spec.compression.content_encoding(),
            content_length: rendered.bytes,
        };
        let mut delays = self.retry.delays();
        let upload_started = Instant::now();
        loop {
            let number = record.attempts.len() as u32 + 1;
            let started_at = Utc::now();
            let t0 = Instant::now();
            let result = s3::put_file(&client, &req, rendered.file.path()).await;
            let took = t0.elapsed();
            match result {
                Ok(etag) => {
                    telemetry::attempt(Ok(()));
                    telemetry::uploaded(spec.format, rendered.bytes, took);
                    record
                        .attempts
                        .push(self.attempt(number, started_at, took, None));
                    let now = Utc::now();
                    record.status = DeliveryStatus::Delivered;
                    record.bytes = Some(rendered.bytes);
                    record.rows = rendered.rows;
                    record.etag = etag;
                    record.error = None;
                    record.delivered_at = Some(now);
                    record.updated_at = now;
                    let total = (now - record.enqueued_at).to_std().unwrap_or_default();
                    record.timings = Some(Timings {
                        render_ms: millis(render_took),
                        upload_ms: millis(upload_started.elapsed()),
                        total_ms: millis(total),
                    });
                    self.records.put(&record).await?;
                    telemetry::delivery_finished(Outcome::Delivered, spec.format, total);
                    tracing::info!(key = %key, bytes = rendered.bytes, attempts = number, "delivered");
                    return Ok(Handled::Delivered);
                }
                Err(failure) => {
                    telemetry::attempt(Err(failure.class));
                    record
                        .attempts
                        .push(self.attempt(number, started_at, took, Some(&failure)));
                    let next = match failure.class {
                        ErrorClass::Transient => delays.next(),
                        ErrorClass::Permanent => None,
                    };
                    let Some(delay) = next else {
                        tracing::warn!(code = %failure.code, class = failure.class.label(), attempts = number, "delivery failed");
                        let err = DeliveryError {
                            code: failure.code,
                            message: failure.message,
                        };
                        return self.fail(record, err, Some(spec.format), payload).await;
                    };
                    tracing::info!(code = %failure.code, ?delay, attempt = number, "transient failure; retrying");
                    telemetry::delivery_retried(spec.format);
                    record.status = DeliveryStatus::Retrying;
                    record.error = Some(DeliveryError {
                        code: failure.code,
                        message: failure.message,
                    });
                    record.updated_at = Utc::now();
                    self.records.put(&record).await?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn render(
        &self,
        dest: &Destination,
        task: &mut DeliveryTask,
    ) -> Result<Rendered, String> {
        let spec = RenderSpec {
            format: dest.spec.format,
            compression: dest.spec.compression,
            columns: std::mem::take(&mut task.columns),
        };
        let rows = std::mem::take(&mut task.rows);
        let dir = self.spool_dir.clone();
        tokio::task::spawn_blocking(move || render_to_spool(&spec, &rows, dir.as_deref()))
            .await
            .map_err(|e| format!("rendering panicked: {e}"))?
            .map_err(|e| e.to_string())
    }

    fn attempt(
        &self,
        number: u32,
        started_at: chrono::DateTime<Utc>,
        took: Duration,
        failure: Option<&S3Failure>,
    ) -> Attempt {
        Attempt {
            number,
            worker: self.worker_name.clone(),
            started_at,
            duration_ms: millis(took),
            outcome: if failure.is_some() {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Delivered
            },
            error_code: failure.map(|f| f.code.clone()),
            error_message: failure.map(|f| f.message.clone()),
        }
    }

    /// Parks the task while its destination is paused. If the destination was resumed
    /// meanwhile, releases at once, so a task is never left behind by that race.
    async fn hold(
        &self,
        mut record: DeliveryRecord,
        task: &DeliveryTask,
    ) -> Result<Handled, StoreError> {
        self.held.hold(task).await?;
        record.status = DeliveryStatus::Held;
        record.updated_at = Utc::now();
        self.records.put(&record).await?;
        tracing::info!("destination paused; delivery held");
        let resumed = self
            .destinations
            .summary(&task.tenant, &task.destination_id)
            .await?
            .is_some_and(|d| d.status == DestinationStatus::Active);
        if resumed {
            self.held.release(&task.destination_id).await?;
        }
        Ok(Handled::Held)
    }

    async fn fail(
        &self,
        mut record: DeliveryRecord,
        err: DeliveryError,
        format: Option<courier_core::Format>,
        payload: Value,
    ) -> Result<Handled, StoreError> {
        let now = Utc::now();
        let code = err.code.clone();
        self.dead
            .add(&DeadLetter {
                id: record.id.to_string(),
                destination_id: Some(record.destination_id.clone()),
                code: err.code.clone(),
                reason: err.message.clone(),
                died_at: now,
                payload,
            })
            .await?;
        record.status = DeliveryStatus::Failed;
        record.error = Some(err);
        record.updated_at = now;
        self.records.put(&record).await?;
        let total = (now - record.enqueued_at).to_std().unwrap_or_default();
        telemetry::delivery_finished(Outcome::Failed, format.unwrap_or(record.format), total);
        Ok(Handled::Failed { code })
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// A record for a task whose record is missing (e.g. written by an older producer).
fn record_from_task(task: &DeliveryTask) -> DeliveryRecord {
    DeliveryRecord {
        id: task.delivery_id.clone(),
        tenant: task.tenant.clone(),
        destination_id: task.destination_id.clone(),
        job_id: task.job_id.clone(),
        partner_inventory_id: task.partner_inventory_id.clone(),
        completed_at: task.completed_at,
        status: DeliveryStatus::Queued,
        format: Default::default(),
        compression: Default::default(),
        rows: task.rows.len() as u64,
        bucket: None,
        key: None,
        bytes: None,
        etag: None,
        attempts: Vec::new(),
        error: None,
        timings: None,
        enqueued_at: task.enqueued_at,
        delivered_at: None,
        updated_at: Utc::now(),
    }
}
