//! Completed jobs and their delivery records: enqueue, read, list, retry.

use courier_core::delivery::{DeliveryRecord, DeliveryStatus};
use courier_core::{DeliveryId, TenantId, ValidationErrors};
use courier_store::{Page, RecordFilter};

use super::{Service, ServiceError};
use crate::EnqueueError;
use crate::enqueue::Enqueued;
use courier_store::idempotency::check_key;

/// The header (and field name in errors) of an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
use crate::wire::JobCompletedRequest;

impl Service {
    /// Validates a "job completed" and queues its delivery to `tenant`'s destination;
    /// answers once Redis holds the task ([`crate::Producer::enqueue`]). Another tenant's
    /// destination is as unknown as a missing one.
    ///
    /// With an `idempotency_key`, the same key from `tenant` within 24 hours answers with
    /// the first delivery (`replayed`) and queues nothing; the same key with another job is
    /// refused, naming the `Idempotency-Key` header.
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        req: JobCompletedRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Enqueued, ServiceError> {
        let key_check = idempotency_key.map(check_key).transpose();
        let job = req.validate();
        let job = match (job, key_check) {
            (Ok(job), Ok(_)) => job,
            (job, key) => {
                let mut errors = job.err().unwrap_or_default();
                if let Err(m) = key {
                    errors.push(IDEMPOTENCY_KEY, m);
                }
                return Err(ServiceError::Invalid(errors));
            }
        };
        let enqueued = self
            .producer
            .enqueue_idempotent(tenant, job, idempotency_key)
            .await
            .map_err(ServiceError::from)?;
        let r = &enqueued.record;
        if enqueued.replayed {
            tracing::info!(delivery_id = %r.id, job_id = %r.job_id, "idempotency key replayed; nothing queued");
        } else {
            tracing::info!(delivery_id = %r.id, job_id = %r.job_id, destination_id = %r.destination_id, "delivery queued");
        }
        Ok(enqueued)
    }

    /// `tenant`'s delivery `id`; malformed, missing and foreign ids read as not found.
    pub async fn delivery(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<DeliveryRecord, ServiceError> {
        let not_found = || ServiceError::not_found("delivery", id);
        let parsed = DeliveryId::parse(id).map_err(|_| not_found())?;
        self.records
            .get(tenant, &parsed)
            .await?
            .ok_or_else(not_found)
    }

    /// A page of `tenant`'s delivery records matching `filter`, newest first, read from one
    /// index of `tenant`'s. A `destination_id` that is not one of `tenant`'s destinations
    /// (another tenant's, a deleted or a missing one) is [`ServiceError::NotFound`], and its
    /// index is not read.
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        limit: usize,
        cursor: Option<&DeliveryId>,
    ) -> Result<Page<DeliveryRecord>, ServiceError> {
        if let Some(d) = &filter.destination_id
            && self.destinations.summary(tenant, d).await?.is_none()
        {
            return Err(ServiceError::not_found("destination", d.as_str()));
        }
        Ok(self.records.list(tenant, filter, limit, cursor).await?)
    }

    /// Delivers `tenant`'s failed delivery `id` again from its dead letter. Only a `FAILED`
    /// delivery can be retried (`NOT_FAILED`), and only while its task is kept
    /// (`TASK_EXPIRED`). A batched delivery is retried with its whole window (the window's
    /// dead letter), and is `BATCHED` again.
    pub async fn retry(&self, tenant: &TenantId, id: &str) -> Result<DeliveryRecord, ServiceError> {
        let mut record = self.delivery(tenant, id).await?;
        if record.status != DeliveryStatus::Failed {
            return Err(ServiceError::Conflict {
                code: "NOT_FAILED",
                message: format!(
                    "only a FAILED delivery can be retried; this one is {}",
                    serde_json::to_value(record.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            });
        }
        // A batched delivery failed with its window: the window's letter replays it (and
        // the rest of the window's deliveries with it).
        let letter_id = match &record.batch {
            Some(b) => courier_store::WindowId {
                destination_id: record.destination_id.clone(),
                start: b.window_start.timestamp(),
            }
            .letter_id(),
            None => record.id.to_string(),
        };
        let Some(letter) = self.dead.get(&letter_id).await? else {
            return Err(ServiceError::Conflict {
                code: "TASK_EXPIRED",
                message: "the task of this delivery is no longer kept; enqueue the job again"
                    .into(),
            });
        };
        self.replay_dead_letter(&letter).await?;
        if record.batch.is_some() {
            return self.delivery(tenant, id).await;
        }
        // What the replay wrote (the record is not read again: a worker may have taken the
        // task already).
        record.requeued(chrono::Utc::now());
        Ok(record)
    }
}

impl From<EnqueueError> for ServiceError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::DestinationNotFound(id) => {
                ServiceError::Invalid(ValidationErrors::single(
                    "destinationId",
                    format!("destination `{id}` does not exist"),
                ))
            }
            EnqueueError::Invalid(errors) => ServiceError::Invalid(errors),
            EnqueueError::IdempotencyMismatch => ServiceError::Invalid(ValidationErrors::single(
                IDEMPOTENCY_KEY,
                "was already used for a different request in the last 24 hours; use a new \
                 key for a new request",
            )),
            e @ EnqueueError::TooManyWaiting { .. } => ServiceError::TooMany {
                code: super::rules::QUOTA_EXCEEDED,
                limit: super::rules::WAITING_LIMIT,
                message: e.to_string(),
                retry_after: super::rules::QUOTA_RETRY_AFTER,
            },
            e @ EnqueueError::IdempotencyInProgress => ServiceError::Conflict {
                code: "IDEMPOTENCY_KEY_IN_USE",
                message: e.to_string(),
            },
            e @ EnqueueError::NotReplicated { .. } => ServiceError::Unavailable {
                code: "NOT_REPLICATED",
                message: e.to_string(),
            },
            EnqueueError::Store(e) => ServiceError::Store(e),
        }
    }
}
