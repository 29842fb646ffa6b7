//! One delivery, start to finish: the shell around [`crate::decide`]. It decodes the
//! task, reads what each stage of the decision needs (the record, the destination and its
//! health, the claims on the key and an upload slot, the key's marker, the attempt's
//! outcome) and carries out the transition through the small interfaces of
//! [`crate::ports`]: records, destinations and health, queue, held and dead letters, key
//! guard, upload slots, and the uploader that renders and uploads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use courier_core::delivery::{
    Attempt, Delivered, DeliveryError, DeliveryRecord, DeliveryStatus, DeliveryTask,
};
use courier_core::destination::Destination;
use courier_core::key::object_key;
use courier_core::{DestinationId, ErrorCode};
use courier_store::{DeadLetter, Marker, Signal, StoreError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::decide::{
    Bounds, Busy, DestinationState, End, Facts, Stage, Transition, charged_to, decide,
};
use crate::pipeline::PipelineError;
use crate::ports::{ClaimsHeld, RedisStores, S3Upload, Stores, Upload};
use crate::renew::{self, Renewal};
use crate::retry::RetryPolicy;
use crate::slot_gate;
use crate::telemetry::{self, InFlight, Outcome};

/// Everything a worker needs to deliver; shared by all of its tasks. `S` and `U` are the
/// store side and the uploader ([`crate::ports`]): Redis and S3 in a worker, in memory in
/// the shell's unit tests.
#[derive(Debug, Clone)]
pub struct Deliverer<S = RedisStores, U = S3Upload> {
    pub stores: S,
    pub uploader: U,
    pub worker_name: String,
    pub retry: RetryPolicy,
    /// Permanent failures in a row after which a destination is marked failing.
    pub failing_threshold: u32,
    /// How long a delivery may be held, and after how long it is too old to upload.
    pub bounds: Bounds,
}

/// What a delivery's attempt shares with the code that holds its claims: the token that
/// stops the upload when the object key's lock is lost, and what the attempt said about its
/// destination's load (given back with the upload slot).
#[derive(Debug)]
struct AttemptWatch {
    lost: CancellationToken,
    signal: std::sync::Mutex<Signal>,
}

/// How the part of a delivery that holds its claims ended.
#[derive(Debug)]
enum Ran {
    /// Carried out already; the claims are to be given back.
    Ended(Handled),
    /// Uploaded, and the record says delivered; it is written with the claims' release
    /// ([`crate::ports::Finish::finish_delivered`]). `completed_at` is the result's.
    Delivered { completed_at: chrono::DateTime<Utc> },
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

impl<S: Stores, U: Upload> Deliverer<S, U> {
    /// Handles one task payload (as queued: [`courier_core::payload`]), decoded here and
    /// only here. A failure of Courier's own storage is retried by Courier's policy
    /// ([`crate::storage`]); an `Err` means not even that could be written and the task
    /// should be handed back to the queue. Every other outcome is recorded.
    pub async fn handle(self: Arc<Self>, payload: &[u8]) -> Result<Handled, StoreError> {
        let _in_flight = InFlight::enter();
        let task = match courier_core::payload::decode(payload) {
            Ok(t) => t,
            Err(e) => return self.poison(payload, &e.to_string()).await,
        };
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %task.delivery_id,
            job_id = %task.job_id,
            destination_id = %task.destination_id
        );
        async {
            match self.deliver(task, payload).await {
                Err(e) => self.storage_failed(payload, e).await,
                handled => handled,
            }
        }
        .instrument(span)
        .await
    }

    async fn poison(&self, payload: &[u8], error: &str) -> Result<Handled, StoreError> {
        telemetry::poison();
        let id = format!("poison_{}", ulid::Ulid::new());
        tracing::error!(dead_letter = %id, error, "task payload is not a delivery task; dead-lettered");
        self.stores
            .dead_letter(&DeadLetter {
                id,
                destination_id: None,
                code: ErrorCode::UndecodableTask.to_string(),
                reason: format!("the task payload is not a delivery task: {error}"),
                died_at: Utc::now(),
                payload: payload_value(payload),
            })
            .await?;
        Ok(Handled::Poison)
    }

    /// Runs the task through the stages of [`decide`], carrying out each transition.
    async fn deliver(&self, task: DeliveryTask, payload: &[u8]) -> Result<Handled, StoreError> {
        // Only the task's tenant's destination: another tenant's is absent, as a missing one.
        let (record, dest) = self.stores.taken(&task).await?;
        let mut record = match record {
            Some(r) => r,
            // The record is missing (e.g. written by an older producer): start one.
            None => {
                DeliveryRecord::queued(&task, Default::default(), Default::default(), 0, Utc::now())
            }
        };
        let destination = dest.as_ref().map(|(d, failing)| DestinationState {
            status: d.spec.status,
            failing: *failing,
        });
        let dest = dest.map(|(d, _)| d);
        let dest = match (
            self.decide(&record, &task, Stage::Taken { destination }),
            dest,
        ) {
            (Transition::Proceed, Some(dest)) => dest,
            (Transition::End(end), _) => return self.end(end, &mut record, &task, payload).await,
            (Transition::Proceed, None) => {
                unreachable!("decide fails a delivery without a destination")
            }
        };
        let key = object_key(
            &dest.spec.s3.path_prefix,
            &task.partner_inventory_id,
            task.completed_at,
            dest.spec.format,
            dest.spec.compression,
        );
        // The key's lock, then an upload slot, and the key's marker under the lock; with
        // both, the record as the upload begins may be written in the same step (a run that
        // ends at the claims is rescheduled, which writes no record).
        record.start(
            dest.spec.format,
            dest.spec.compression,
            dest.spec.s3.bucket.as_str(),
            &key,
            Utc::now(),
        );
        let ClaimsHeld {
            key: key_claimed,
            slot: slot_claimed,
            marker,
            recorded,
        } = self.stores.claim(&record, &key, KEY_LOCK_TTL).await?;
        let claimed = Stage::Claimed {
            key: key_claimed,
            slot: slot_claimed,
        };
        if let Transition::End(end) = self.decide(&record, &task, claimed) {
            if key_claimed {
                self.stores
                    .unlock_key(&dest.id, &key, &task.delivery_id)
                    .await?;
            }
            return self.end(end, &mut record, &task, payload).await;
        }
        let id = task.delivery_id.clone();
        // Both claims expire by themselves (so a dead worker's do); a long delivery renews
        // them, a third of the shorter lifetime at a time, until it ends. A renewal that
        // finds the key taken by another delivery stops the upload (`lost`).
        let every = KEY_LOCK_TTL.min(self.stores.slot_claim_ttl()) / 3;
        let lost = CancellationToken::new();
        let (stores, dest_id, key_ref, id_ref) = (&self.stores, &dest.id, key.as_str(), &id);
        let watch = AttemptWatch {
            lost,
            signal: std::sync::Mutex::new(Signal::Neutral),
        };
        let result = renew::while_running(
            self.deliver_locked(
                &dest,
                &key,
                marker,
                recorded,
                task,
                payload,
                &mut record,
                &watch,
            ),
            every,
            &watch.lost,
            move || async move {
                if !stores
                    .lock_key(dest_id, key_ref, id_ref, KEY_LOCK_TTL)
                    .await?
                {
                    tracing::warn!(
                        "another delivery of the object key took its lock during the upload; \
                         aborting the upload"
                    );
                    return Ok(Renewal::Lost);
                }
                stores.renew_slot(dest_id, id_ref).await?;
                Ok::<_, StoreError>(Renewal::Held)
            },
        )
        .await;
        let signal = *watch.signal.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Ran::Delivered { completed_at }) = result {
            // The record, the marker, the destination's health, the slot and the lock in
            // one step. Refused (Redis at `maxmemory`), none of it was written: the
            // claims are given back on their own, as after any other end, and the
            // storage failure takes its course.
            match self
                .stores
                .finish_delivered(&record, &key, completed_at, signal)
                .await
            {
                Ok(()) => {
                    let now = Utc::now();
                    telemetry::delivery_finished(
                        Outcome::Delivered,
                        dest.spec.format,
                        record.age(now),
                    );
                    let attempts = record.attempts.len();
                    tracing::info!(key = %key, bytes = record.bytes, attempts, "delivered");
                    return Ok(Handled::Delivered);
                }
                Err(e) => {
                    let _ = self.stores.give_back_slot(&dest.id, &id, signal).await;
                    let _ = self.stores.unlock_key(&dest.id, &key, &record.id).await;
                    return Err(e);
                }
            }
        }
        self.stores.give_back_slot(&dest.id, &id, signal).await?;
        self.stores.unlock_key(&dest.id, &key, &record.id).await?;
        result.map(|ran| match ran {
            Ran::Ended(handled) => handled,
            Ran::Delivered { .. } => unreachable!("finished above"),
        })
    }

    /// The part of a delivery that runs while it holds its object key and upload slot;
    /// `marker` is the key's, read under the lock; `record` is started (in progress), and
    /// written already if `recorded`. `watch.lost` fires if it stops holding the key.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_locked(
        &self,
        dest: &Destination,
        key: &str,
        marker: Option<Marker>,
        recorded: bool,
        mut task: DeliveryTask,
        payload: &[u8],
        record: &mut DeliveryRecord,
        watch: &AttemptWatch,
    ) -> Result<Ran, StoreError> {
        let spec = &dest.spec;
        let locked = Stage::Locked {
            key,
            marker: marker.as_ref(),
        };
        if let Transition::End(end) = self.decide(record, &task, locked) {
            return self.end(end, record, &task, payload).await.map(Ran::Ended);
        }
        if !recorded {
            self.stores.put_record(record).await?;
        }
        let started_at = Utc::now();
        let retry_before = task.retry.clone();
        task.retry.begin(started_at);
        let number = record.next_attempt_number();

        let t0 = Instant::now();
        let result = self.uploader.upload(dest, key, &task, &watch.lost).await;
        let took = t0.elapsed();
        *watch.signal.lock().unwrap_or_else(|e| e.into_inner()) =
            slot_gate::signal_of(&result, took, self.uploader.part_size());
        match &result {
            Ok(up) => {
                telemetry::attempt(Ok(()));
                telemetry::rendered(spec.format, up.render);
                telemetry::uploaded(spec.format, up.bytes, took);
            }
            Err(PipelineError::Stopped) => {}
            Err(e) => {
                if !matches!(e, PipelineError::Render(_)) {
                    telemetry::attempt(Err(e.class()));
                }
                let charged_to = charged_to(e).label();
                tracing::info!(code = %e.error().code, charged_to, "attempt failed");
            }
        }
        if let Err(PipelineError::Stopped) = &result {
            // Not an attempt: nothing of it reached the key, and nothing failed. The
            // delivery goes back as it came, its retry count untouched.
            task.retry = retry_before;
        } else {
            let error = result.as_ref().err().map(PipelineError::error);
            record.attempts.push(Attempt {
                number,
                worker: self.worker_name.clone(),
                started_at,
                duration_ms: millis(took),
                outcome: if error.is_some() {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Delivered
                },
                error_code: error.as_ref().map(|e| e.code.clone()),
                error_message: error.map(|e| e.message),
            });
        }
        let Transition::End(end) =
            self.decide(record, &task, Stage::Attempted(result.as_ref().map(|_| ())))
        else {
            unreachable!("an attempt always ends the run");
        };
        if let (End::Delivered, Ok(up)) = (&end, result) {
            let now = Utc::now();
            record.delivered(
                Delivered {
                    bytes: up.bytes,
                    rows: up.rows,
                    etag: up.etag,
                    md5: up.md5,
                    render_ms: millis(up.render),
                    upload_ms: millis(took),
                },
                now,
            );
            // Written with the claims' release ([`Deliverer::deliver`]).
            return Ok(Ran::Delivered {
                completed_at: task.completed_at,
            });
        }
        self.end(end, record, &task, payload).await.map(Ran::Ended)
    }

    /// Asks [`decide`] about `stage`, now.
    fn decide(&self, record: &DeliveryRecord, task: &DeliveryTask, stage: Stage<'_>) -> Transition {
        let facts = Facts {
            record,
            task,
            policy: &self.retry,
            bounds: &self.bounds,
            now: Utc::now(),
        };
        decide(&facts, stage, &mut rand::rng())
    }

    /// Carries out every way a run ends but a delivery (which needs the upload's result).
    async fn end(
        &self,
        end: End,
        record: &mut DeliveryRecord,
        task: &DeliveryTask,
        payload: &[u8],
    ) -> Result<Handled, StoreError> {
        match end {
            End::Skip => {
                tracing::info!(status = ?record.status, "already final; skipping the duplicate task");
                Ok(Handled::Delivered)
            }
            End::Hold(why) => self.hold(record, task, why.as_str()).await,
            End::Supersede { key, newer, error } => {
                let now = Utc::now();
                record.superseded(&key, error, now);
                self.stores.put_record(record).await?;
                telemetry::delivery_finished(Outcome::Superseded, record.format, record.age(now));
                tracing::info!(key, newer, "superseded by a newer result; not uploaded");
                Ok(Handled::Superseded)
            }
            End::Fail { error, strike } => {
                if strike {
                    self.strike(&task.destination_id, &error).await?;
                } else if error.code == ErrorCode::RetriesExhausted.as_str() {
                    tracing::warn!(attempts = task.retry.attempts, "retries exhausted");
                }
                self.fail(record, error, payload).await
            }
            End::Retry { at, delay, error } => {
                tracing::info!(code = %error.code, ?delay, attempt = task.retry.attempts, "transient failure; retry scheduled");
                telemetry::delivery_retried(record.format);
                record.retrying(error, Utc::now());
                self.stores.put_record(record).await?;
                self.stores.schedule(task.clone(), at).await?;
                Ok(Handled::Retrying)
            }
            End::Reschedule { at, busy } => {
                match busy {
                    Busy::Key => tracing::debug!("object key busy; rescheduling"),
                    // The destination has its share of the fleet's uploads in flight and
                    // none is about to end (its endpoint may hang): give the worker to
                    // someone else for now.
                    Busy::Slots => tracing::debug!("destination at its upload cap; rescheduling"),
                    Busy::KeyLost => tracing::info!(
                        "upload aborted: the object key's lock was lost to another delivery; \
                         rescheduled"
                    ),
                }
                self.stores.schedule(task.clone(), at).await?;
                Ok(Handled::Retrying)
            }
            End::Delivered => unreachable!("a delivery is recorded with its upload"),
        }
    }

    /// A permanent failure counts against the destination's health.
    async fn strike(&self, dest: &DestinationId, error: &DeliveryError) -> Result<(), StoreError> {
        tracing::warn!(code = %error.code, "permanent failure");
        let health = self
            .stores
            .record_permanent_failure(dest, error, self.failing_threshold)
            .await?;
        if health.is_failing() {
            tracing::warn!(
                failures = health.consecutive_failures,
                "destination marked failing; its deliveries are held"
            );
        }
        Ok(())
    }

    /// Parks the task while its destination is paused or failing. If the destination
    /// recovered meanwhile, releases at once, so that race never strands a task.
    async fn hold(
        &self,
        record: &mut DeliveryRecord,
        task: &DeliveryTask,
        why: &str,
    ) -> Result<Handled, StoreError> {
        self.stores.hold(task).await?;
        record.held(Utc::now());
        self.stores.put_record(record).await?;
        tracing::info!(why, "delivery held");
        telemetry::delivery_parked(record.format);
        self.stores
            .release_if_active(&task.tenant, &task.destination_id)
            .await?;
        Ok(Handled::Held)
    }

    /// Fails the delivery for good: the record says why, the task is dead-lettered so it
    /// can be replayed.
    async fn fail(
        &self,
        record: &mut DeliveryRecord,
        err: DeliveryError,
        payload: &[u8],
    ) -> Result<Handled, StoreError> {
        let now = Utc::now();
        let code = err.code.clone();
        self.stores
            .dead_letter(&DeadLetter {
                id: record.id.to_string(),
                destination_id: Some(record.destination_id.clone()),
                code: err.code.clone(),
                reason: err.message.clone(),
                died_at: now,
                payload: payload_value(payload),
            })
            .await?;
        record.failed(err, now);
        self.stores.put_record(record).await?;
        telemetry::delivery_finished(Outcome::Dead, record.format, record.age(now));
        Ok(Handled::Failed { code })
    }
}

/// A queued payload as a dead letter keeps it: its task's JSON, or its text when it is not
/// JSON.
pub(crate) fn payload_value(payload: &[u8]) -> Value {
    courier_core::payload::json(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_else(
            || serde_json::json!({ "courierUndecodable": String::from_utf8_lossy(payload) }),
        )
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
