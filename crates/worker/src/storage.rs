//! When Courier's own storage (Redis) fails while a worker handles a delivery: the task
//! follows Courier's retry policy, not apalis-redis's.
//!
//! A failed read or write of a record, a lock, the queue… ends [`Deliverer::handle`] with a
//! [`StoreError`]. The failure counts as an attempt of the delivery ([`RetryPolicy`],
//! shared with transient upload failures): the record gets an attempt with the code
//! `StorageFailed` and the task is scheduled again after the policy's delay, in one write
//! that Redis accepts even at `maxmemory` ([`DeliveryQueue::retry_after_storage_failure`]).
//! Once the policy is spent, the delivery becomes a dead letter and its record `FAILED`
//! with `StorageRetriesExhausted`, replayable like any other. When not even that can be
//! written (Redis read-only or gone), the error goes back to [`crate::run`], which hands
//! the task back to the queue after a delay; should apalis-redis give up on it, the
//! janitor moves it into Courier's dead letters.
//!
//! [`RetryPolicy`]: crate::RetryPolicy
//! [`DeliveryQueue::retry_after_storage_failure`]: courier_store::DeliveryQueue::retry_after_storage_failure

use chrono::Utc;
use courier_core::ErrorCode;
use courier_core::delivery::{Attempt, DeliveryError, DeliveryStatus};
use courier_store::{DeadLetter, StoreError};

use crate::deliver::{Deliverer, Handled};
use crate::ports::{Stores, Upload};
use crate::telemetry::{self, Outcome, StorageOutcome};

impl<S: Stores, U: Upload> Deliverer<S, U> {
    /// Carries out Courier's retry policy for a task whose handling failed with `error`
    /// in Courier's own storage. `Ok` when the retry (or the dead letter) was written and
    /// the task apalis ran may be acknowledged; `Err` when nothing could be written, so
    /// the task must stay in the queue.
    pub(crate) async fn storage_failed(
        &self,
        payload: &[u8],
        error: StoreError,
    ) -> Result<Handled, StoreError> {
        let Ok(mut task) = courier_core::payload::decode(payload) else {
            // A poison payload whose dead letter could not be written: it stays queued.
            telemetry::storage_failure(StorageOutcome::HandedBack);
            return Err(error);
        };
        let now = Utc::now();
        task.retry.begin(now);
        // An unreadable record is left as it is; the task still follows the policy.
        let mut record = self
            .stores
            .record(&task.delivery_id)
            .await
            .unwrap_or_default();
        if let Some(r) = &record
            && r.status.is_final()
        {
            // The outcome was written; what failed came after it (a lock's release).
            tracing::warn!(error = %error, status = ?r.status, "Courier's storage failed after the delivery's outcome was recorded");
            return Ok(Handled::Delivered);
        }
        let message = format!("Courier's own storage failed: {error}");
        tracing::warn!(error = %error, attempt = task.retry.attempts, "Courier's own storage failed while handling the delivery");
        if let Some(r) = record.as_mut() {
            r.attempts.push(Attempt {
                number: r.next_attempt_number(),
                worker: self.worker_name.clone(),
                started_at: now,
                duration_ms: 0,
                outcome: DeliveryStatus::Failed,
                error_code: Some(ErrorCode::StorageFailed.to_string()),
                error_message: Some(message.clone()),
            });
        }
        let elapsed = task.retry.elapsed(now);
        let delay = self
            .retry
            .next_delay(task.retry.attempts, elapsed, &mut rand::rng());
        if let Some(delay) = delay {
            if let Some(r) = record.as_mut() {
                r.retrying(DeliveryError::new(ErrorCode::StorageFailed, message), now);
            }
            let at = now + delay;
            return match self
                .stores
                .retry_after_storage_failure(record.as_ref(), &task, at)
                .await
            {
                Ok(()) => {
                    telemetry::storage_failure(StorageOutcome::Retried);
                    tracing::info!(
                        ?delay,
                        attempt = task.retry.attempts,
                        "storage failure; retry scheduled"
                    );
                    Ok(Handled::Retrying)
                }
                Err(e) => {
                    telemetry::storage_failure(StorageOutcome::HandedBack);
                    tracing::warn!(error = %e, "storage failure; the retry could not be written either, the task stays in the queue");
                    Err(error)
                }
            };
        }
        // The policy is spent: a dead letter, replayable once storage is healthy.
        let failure = DeliveryError::new(
            ErrorCode::StorageRetriesExhausted,
            format!(
                "Courier's own storage failed on {} attempts over {} s; the last failure: {error}",
                task.retry.attempts,
                elapsed.as_secs()
            ),
        );
        let letter = DeadLetter {
            id: task.delivery_id.to_string(),
            destination_id: Some(task.destination_id.clone()),
            code: failure.code.clone(),
            reason: failure.message.clone(),
            died_at: now,
            payload: crate::deliver::payload_value(payload),
        };
        let written = async {
            self.stores.dead_letter(&letter).await?;
            if let Some(r) = record.as_mut() {
                r.failed(failure.clone(), now);
                self.stores.put_record(r).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        match written {
            Ok(()) => {
                telemetry::storage_failure(StorageOutcome::Dead);
                if let Some(r) = &record {
                    telemetry::delivery_finished(Outcome::Dead, r.format, r.age(now));
                }
                tracing::error!(
                    attempts = task.retry.attempts,
                    "Courier's storage kept failing; the delivery is a dead letter"
                );
                Ok(Handled::Failed { code: failure.code })
            }
            Err(e) => {
                // Not even the dead letter could be written: keep the task queued, as late
                // as the policy ever waits, and try again then.
                tracing::warn!(error = %e, "the dead letter could not be written; the task stays in the queue");
                let at = now + self.retry.max_delay;
                match self
                    .stores
                    .retry_after_storage_failure(None, &task, at)
                    .await
                {
                    Ok(()) => {
                        telemetry::storage_failure(StorageOutcome::Retried);
                        Ok(Handled::Retrying)
                    }
                    Err(_) => {
                        telemetry::storage_failure(StorageOutcome::HandedBack);
                        Err(error)
                    }
                }
            }
        }
    }
}
