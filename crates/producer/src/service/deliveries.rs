//! Completed jobs and their delivery records: enqueue, read, list, retry.

use courier_core::delivery::{DeliveryRecord, DeliveryStatus};
use courier_core::{DeliveryId, TenantId, ValidationErrors};
use courier_store::{Page, RecordFilter};

use super::{Service, ServiceError};
use crate::EnqueueError;
use crate::wire::JobCompletedRequest;

impl Service {
    /// Validates a "job completed" and queues its delivery to `tenant`'s destination;
    /// answers once Redis holds the task ([`crate::Producer::enqueue`]). Another tenant's
    /// destination is as unknown as a missing one.
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        req: JobCompletedRequest,
    ) -> Result<DeliveryRecord, ServiceError> {
        let job = req.validate().map_err(ServiceError::Invalid)?;
        let record = self
            .producer
            .enqueue(tenant, job)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(delivery_id = %record.id, job_id = %record.job_id, destination_id = %record.destination_id, "delivery queued");
        Ok(record)
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

    /// A page of `tenant`'s delivery records matching `filter`, newest first.
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        limit: usize,
        cursor: Option<&DeliveryId>,
    ) -> Result<Page<DeliveryRecord>, ServiceError> {
        Ok(self.records.list(tenant, filter, limit, cursor).await?)
    }

    /// Delivers `tenant`'s failed delivery `id` again from its dead letter. Only a `FAILED`
    /// delivery can be retried (`NOT_FAILED`), and only while its task is kept
    /// (`TASK_EXPIRED`).
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
        let Some(letter) = self.dead.get(record.id.as_str()).await? else {
            return Err(ServiceError::Conflict {
                code: "TASK_EXPIRED",
                message: "the task of this delivery is no longer kept; enqueue the job again"
                    .into(),
            });
        };
        self.replay_dead_letter(&letter).await?;
        record.status = DeliveryStatus::Queued;
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
            EnqueueError::Store(e) => ServiceError::Store(e),
        }
    }
}
