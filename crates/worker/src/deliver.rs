//! One delivery, start to finish: decode the task, load the destination, take the key,
//! render the file, upload it, and write the record. A transient failure schedules a
//! durable retry in the queue; a permanent one fails the delivery, dead-letters its task
//! and counts against the destination's health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier_core::delivery::{
    Attempt, Checksum, DeliveryError, DeliveryRecord, DeliveryStatus, DeliveryTask, Timings,
};
use courier_core::destination::{Destination, DestinationStatus};
use courier_core::failure::ErrorClass;
use courier_core::key::object_key;
use courier_core::render::RenderSpec;
use courier_s3::stream::ObjectTarget;
use courier_s3::{ClientCache, S3Failure};
use courier_store::{
    DeadLetter, DeadLetters, DeliveryQueue, DestinationStore, HealthStore, HeldDeliveries,
    KeyGuard, RecordStore, StoreError,
};
use serde_json::Value;
use tracing::Instrument;

use crate::pipeline::{self, PipelineError, Rows, Uploaded};
use crate::renew;
use crate::retry::RetryPolicy;
use crate::slot_gate::SlotGate;
use crate::source::{self, Staging};
use crate::telemetry::{self, InFlight, Outcome};

/// Everything a worker needs to deliver; shared by all of its tasks.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub destinations: DestinationStore,
    pub records: RecordStore,
    pub queue: DeliveryQueue,
    pub held: HeldDeliveries,
    pub dead: DeadLetters,
    pub health: HealthStore,
    pub keys: KeyGuard,
    pub worker_name: String,
    /// S3 clients per destination, kept between deliveries.
    pub clients: Arc<ClientCache>,
    pub retry: RetryPolicy,
    /// Permanent failures in a row after which a destination is marked failing.
    pub failing_threshold: u32,
    /// The fleet-wide cap on concurrent uploads per destination.
    pub slots: Arc<SlotGate>,
    /// Where `s3://` row references are read from.
    pub staging: Staging,
    /// For `http(s)://` row references.
    pub http: reqwest::Client,
    /// Bytes per multipart part (at least 5 MiB); smaller results go as one PutObject.
    pub part_size: usize,
}

/// What became of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Delivered,
    /// A transient failure; the task is scheduled again.
    Retrying,
    Failed {
        code: String,
    },
    /// Not uploaded because a newer result is already at the key.
    Superseded,
    /// Parked until its paused or failing destination is active again.
    Held,
    /// The payload was not a delivery task; it went to the dead letters as it was.
    Poison,
}

/// How long a delivery's hold on its object key lasts unless renewed; a running delivery
/// renews it (see [`renew`]), so this only bounds how long a dead worker's lock blocks.
const KEY_LOCK_TTL: Duration = Duration::from_secs(15 * 60);
/// When the key is busy with another delivery of it, try again this much later.
const KEY_BUSY_DELAY: Duration = Duration::from_secs(1);

impl Deliverer {
    /// Handles one task payload, decoded here and only here. An `Err` means Courier's own
    /// storage failed and the task should be handed back to the queue; every other outcome
    /// is recorded.
    pub async fn handle(self: Arc<Self>, payload: &[u8]) -> Result<Handled, StoreError> {
        let _in_flight = InFlight::enter();
        let task = match serde_json::from_slice::<DeliveryTask>(payload) {
            Ok(t) => t,
            Err(e) => return self.poison(payload, &e.to_string()).await,
        };
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %task.delivery_id,
            job_id = %task.job_id,
            destination_id = %task.destination_id
        );
        self.deliver(task, payload).instrument(span).await
    }

    async fn poison(&self, payload: &[u8], error: &str) -> Result<Handled, StoreError> {
        telemetry::poison();
        let id = format!("poison_{}", ulid::Ulid::new());
        tracing::error!(dead_letter = %id, error, "task payload is not a delivery task; dead-lettered");
        self.dead
            .add(&DeadLetter {
                id,
                destination_id: None,
                code: "UndecodableTask".into(),
                reason: format!("the task payload is not a delivery task: {error}"),
                died_at: Utc::now(),
                payload: payload_value(payload),
            })
            .await?;
        Ok(Handled::Poison)
    }

    async fn deliver(&self, task: DeliveryTask, payload: &[u8]) -> Result<Handled, StoreError> {
        let mut record = match self.records.get_any(&task.delivery_id).await? {
            Some(r) => r,
            None => record_from_task(&task),
        };
        if record.status.is_final() && record.status != DeliveryStatus::Failed {
            tracing::info!(status = ?record.status, "already final; skipping the duplicate task");
            return Ok(Handled::Delivered);
        }
        let Some(dest) = self.destinations.get_any(&task.destination_id).await? else {
            let err = DeliveryError {
                code: "DestinationNotFound".into(),
                message: format!("destination {} no longer exists", task.destination_id),
            };
            return self.fail(record, err, payload).await;
        };
        if dest.spec.status == DestinationStatus::Paused {
            return self.hold(record, &task, "paused").await;
        }
        if self.health.get(&dest.id).await?.is_failing() {
            return self.hold(record, &task, "failing").await;
        }
        let key = object_key(
            &dest.spec.s3.path_prefix,
            &task.partner_inventory_id,
            task.completed_at,
            dest.spec.format,
            dest.spec.compression,
        );
        if !self
            .keys
            .lock(&dest.id, &key, &task.delivery_id, KEY_LOCK_TTL)
            .await?
        {
            // Another delivery of the same key is under way; come back when it is done.
            tracing::debug!(key = %key, "object key busy; rescheduling");
            self.queue
                .schedule(task, Utc::now() + KEY_BUSY_DELAY)
                .await?;
            return Ok(Handled::Retrying);
        }
        if !self.slots.take(&dest.id, &task.delivery_id).await? {
            // This destination already has its share of the fleet's uploads in flight
            // and none is about to end (its endpoint may hang): give the worker to
            // someone else for now.
            self.keys.unlock(&dest.id, &key, &task.delivery_id).await?;
            tracing::debug!("destination at its upload cap; rescheduling");
            self.queue
                .schedule(task, Utc::now() + KEY_BUSY_DELAY)
                .await?;
            return Ok(Handled::Retrying);
        }
        let id = task.delivery_id.clone();
        // Both claims expire by themselves (so a dead worker's do); a long delivery renews
        // them, a third of the shorter lifetime at a time, until it ends.
        let every = KEY_LOCK_TTL.min(self.slots.claim_ttl()) / 3;
        let (keys, slots, dest_id, key_ref, id_ref) =
            (&self.keys, &self.slots, &dest.id, key.as_str(), &id);
        let result = renew::while_running(
            self.deliver_locked(&dest, &key, task, payload, &mut record),
            every,
            move || async move {
                if !keys.lock(dest_id, key_ref, id_ref, KEY_LOCK_TTL).await? {
                    tracing::warn!(
                        "the object key's lock expired during the delivery and another \
                         delivery of the key took it"
                    );
                }
                slots.renew(dest_id, id_ref).await
            },
        )
        .await;
        self.slots.give_back(&dest.id, &id).await?;
        self.keys.unlock(&dest.id, &key, &record.id).await?;
        result
    }

    /// The part of a delivery that runs while it holds its object key.
    async fn deliver_locked(
        &self,
        dest: &Destination,
        key: &str,
        mut task: DeliveryTask,
        payload: &[u8],
        record: &mut DeliveryRecord,
    ) -> Result<Handled, StoreError> {
        let spec = &dest.spec;
        if let Some(newer) = self.keys.marker(&dest.id, key).await?
            && newer.completed_at > task.completed_at
        {
            return self
                .supersede(record, key, &newer.delivery_id, newer.completed_at)
                .await;
        }
        record.status = DeliveryStatus::InProgress;
        record.format = spec.format;
        record.compression = spec.compression;
        record.bucket = Some(spec.s3.bucket.to_string());
        record.key = Some(key.to_owned());
        record.updated_at = Utc::now();
        self.records.put(record).await?;

        let started_at = Utc::now();
        let first_attempt_at = *task.retry.first_attempt_at.get_or_insert(started_at);
        task.retry.attempts += 1;
        let number = record.attempts.len() as u32 + 1;

        let t0 = Instant::now();
        let result = self.render_and_upload(dest, key, &task).await;
        let took = t0.elapsed();
        let result = match result {
            Ok(up) => Ok(up),
            Err(PipelineError::Render(message)) => {
                let err = DeliveryError {
                    code: "RenderFailed".into(),
                    message,
                };
                let failure = S3Failure {
                    code: err.code.clone(),
                    message: err.message.clone(),
                    status: None,
                    class: ErrorClass::Permanent,
                };
                record
                    .attempts
                    .push(self.attempt(number, started_at, took, Some(&failure)));
                return self.fail(record.clone(), err, payload).await;
            }
            Err(PipelineError::Io(failure)) => Err(failure),
        };
        match result {
            Ok(up) => {
                telemetry::attempt(Ok(()));
                telemetry::rendered(spec.format, up.render);
                telemetry::uploaded(spec.format, up.bytes, took);
                record
                    .attempts
                    .push(self.attempt(number, started_at, took, None));
                self.keys
                    .mark(&dest.id, key, task.completed_at, &record.id)
                    .await?;
                self.health.record_success(&dest.id).await?;
                let now = Utc::now();
                record.status = DeliveryStatus::Delivered;
                record.bytes = Some(up.bytes);
                record.rows = up.rows;
                record.etag = up.etag;
                record.checksum = Some(Checksum {
                    algorithm: "MD5".into(),
                    value: up.md5,
                });
                record.error = None;
                record.delivered_at = Some(now);
                record.updated_at = now;
                let total = (now - record.enqueued_at).to_std().unwrap_or_default();
                record.timings = Some(Timings {
                    render_ms: millis(up.render),
                    upload_ms: millis(took),
                    total_ms: millis(total),
                });
                self.records.put(record).await?;
                telemetry::delivery_finished(Outcome::Delivered, spec.format, total);
                tracing::info!(key, bytes = up.bytes, attempts = number, "delivered");
                Ok(Handled::Delivered)
            }
            Err(failure) => {
                telemetry::attempt(Err(failure.class));
                record.attempts.push(self.attempt(
                    number,
                    started_at,
                    t0.elapsed(),
                    Some(&failure),
                ));
                let err = DeliveryError {
                    code: failure.code.clone(),
                    message: failure.message.clone(),
                };
                if failure.class == ErrorClass::Permanent {
                    tracing::warn!(code = %failure.code, "permanent failure");
                    let health = self
                        .health
                        .record_permanent_failure(
                            &dest.id,
                            &failure.code,
                            &failure.message,
                            self.failing_threshold,
                        )
                        .await?;
                    if health.is_failing() {
                        tracing::warn!(
                            failures = health.consecutive_failures,
                            "destination marked failing; its deliveries are held"
                        );
                    }
                    return self.fail(record.clone(), err, payload).await;
                }
                let elapsed = (Utc::now() - first_attempt_at).to_std().unwrap_or_default();
                let delay = self
                    .retry
                    .next_delay(task.retry.attempts, elapsed, &mut rand::rng());
                let Some(delay) = delay else {
                    tracing::warn!(code = %failure.code, attempts = task.retry.attempts, "retries exhausted");
                    let err = DeliveryError {
                        code: "RetriesExhausted".into(),
                        message: format!(
                            "gave up after {} attempts over {}s; the last error was {}: {}",
                            task.retry.attempts,
                            elapsed.as_secs(),
                            failure.code,
                            failure.message
                        ),
                    };
                    return self.fail(record.clone(), err, payload).await;
                };
                tracing::info!(code = %failure.code, ?delay, attempt = task.retry.attempts, "transient failure; retry scheduled");
                telemetry::delivery_retried(spec.format);
                record.status = DeliveryStatus::Retrying;
                record.error = Some(err);
                record.updated_at = Utc::now();
                self.records.put(record).await?;
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                self.queue.schedule(task, at).await?;
                Ok(Handled::Retrying)
            }
        }
    }

    /// Streams the task's rows, rendered, into the object at `key`.
    async fn render_and_upload(
        &self,
        dest: &Destination,
        key: &str,
        task: &DeliveryTask,
    ) -> Result<Uploaded, PipelineError> {
        let spec = RenderSpec {
            format: dest.spec.format,
            compression: dest.spec.compression,
            columns: task.columns.clone(),
            parquet: dest
                .spec
                .parquet
                .clone()
                .with_column_types(&task.column_types),
        };
        let rows = match &task.rows_url {
            Some(url) => Rows::Stream {
                source: source::open(url, &self.staging, &self.http)
                    .await
                    .map_err(PipelineError::Io)?,
                gzip: url.is_gzip(),
            },
            // The renderer runs on its own thread; the rows' JSON text is copied once.
            None => Rows::Inline(task.rows.clone()),
        };
        let client = self.clients.get(&dest.id, &dest.spec.s3).await;
        let target = ObjectTarget {
            bucket: dest.spec.s3.bucket.as_str(),
            key,
            content_type: dest.spec.format.content_type(),
            content_encoding: dest.spec.compression.content_encoding(),
        };
        pipeline::deliver(&client, &target, spec, rows, self.part_size).await
    }

    fn attempt(
        &self,
        number: u32,
        started_at: DateTime<Utc>,
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

    /// Parks the task while its destination is paused or failing. If the destination
    /// recovered meanwhile, releases at once, so that race never strands a task.
    async fn hold(
        &self,
        mut record: DeliveryRecord,
        task: &DeliveryTask,
        why: &str,
    ) -> Result<Handled, StoreError> {
        self.held.hold(task).await?;
        record.status = DeliveryStatus::Held;
        record.updated_at = Utc::now();
        self.records.put(&record).await?;
        tracing::info!(why, "delivery held");
        telemetry::delivery_parked(record.format);
        let active = self
            .destinations
            .summary(&task.tenant, &task.destination_id)
            .await?
            .is_some_and(|d| d.status == DestinationStatus::Active);
        if active && !self.health.get(&task.destination_id).await?.is_failing() {
            self.held.release(&task.destination_id).await?;
        }
        Ok(Handled::Held)
    }

    async fn supersede(
        &self,
        record: &mut DeliveryRecord,
        key: &str,
        newer: &str,
        newer_completed_at: DateTime<Utc>,
    ) -> Result<Handled, StoreError> {
        let now = Utc::now();
        record.status = DeliveryStatus::Superseded;
        record.key = Some(key.to_owned());
        record.error = Some(DeliveryError {
            code: "Superseded".into(),
            message: format!(
                "not uploaded: {key} already holds a newer result (delivery {newer}, completed \
                 at {}); an older result must not overwrite it",
                newer_completed_at.to_rfc3339()
            ),
        });
        record.updated_at = now;
        self.records.put(record).await?;
        let total = (now - record.enqueued_at).to_std().unwrap_or_default();
        telemetry::delivery_finished(Outcome::Superseded, record.format, total);
        tracing::info!(key, newer, "superseded by a newer result; not uploaded");
        Ok(Handled::Superseded)
    }

    /// Fails the delivery for good: the record says why, the task is dead-lettered so it
    /// can be replayed.
    async fn fail(
        &self,
        mut record: DeliveryRecord,
        err: DeliveryError,
        payload: &[u8],
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
                payload: payload_value(payload),
            })
            .await?;
        record.status = DeliveryStatus::Failed;
        record.error = Some(err);
        record.updated_at = now;
        self.records.put(&record).await?;
        let total = (now - record.enqueued_at).to_std().unwrap_or_default();
        telemetry::delivery_finished(Outcome::Dead, record.format, total);
        Ok(Handled::Failed { code })
    }
}

/// A payload as a dead letter keeps it: its JSON, or its text when it is not JSON.
fn payload_value(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or_else(
        |_| serde_json::json!({ "courierUndecodable": String::from_utf8_lossy(payload) }),
    )
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
        // Counted when rendered.
        rows: 0,
        bucket: None,
        key: None,
        bytes: None,
        etag: None,
        checksum: None,
        attempts: Vec::new(),
        error: None,
        timings: None,
        enqueued_at: task.enqueued_at,
        delivered_at: None,
        updated_at: Utc::now(),
    }
}
