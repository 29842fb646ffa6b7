//! Turning a validated "job completed" into a queued delivery task and its record.

use chrono::Utc;
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, DeliveryTask, JobCompleted};
use courier_core::{DeliveryId, DestinationId, TenantId};
use courier_store::{DeliveryQueue, DestinationStore, RecordStore, StoreError};

/// Why a delivery was not enqueued. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("destination {0} does not exist")]
    DestinationNotFound(DestinationId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Enqueues deliveries. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Producer {
    destinations: DestinationStore,
    records: RecordStore,
    queue: DeliveryQueue,
}

impl Producer {
    pub fn new(destinations: DestinationStore, records: RecordStore, queue: DeliveryQueue) -> Self {
        Self {
            destinations,
            records,
            queue,
        }
    }

    /// Queues one delivery of `job` for `tenant` and returns its record.
    ///
    /// The record is written first (status `QUEUED`), then the task is pushed; if the push
    /// fails the record is removed again, so a caller that gets an error may simply retry.
    /// Returns only once Redis holds the task.
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
    ) -> Result<DeliveryRecord, EnqueueError> {
        let destination = self
            .destinations
            .summary(tenant, &job.destination_id)
            .await?
            .ok_or_else(|| EnqueueError::DestinationNotFound(job.destination_id.clone()))?;
        let now = Utc::now();
        let id = DeliveryId::generate();
        let record = DeliveryRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            destination_id: destination.id,
            job_id: job.job_id.clone(),
            partner_inventory_id: job.partner_inventory_id.clone(),
            completed_at: job.completed_at,
            status: DeliveryStatus::Queued,
            format: destination.format,
            compression: destination.compression,
            rows: job.row_count,
            bucket: None,
            key: None,
            bytes: None,
            etag: None,
            checksum: None,
            attempts: Vec::new(),
            error: None,
            timings: None,
            enqueued_at: now,
            delivered_at: None,
            updated_at: now,
        };
        let task = DeliveryTask {
            delivery_id: id,
            tenant: tenant.clone(),
            destination_id: job.destination_id,
            job_id: job.job_id,
            partner_inventory_id: job.partner_inventory_id,
            completed_at: job.completed_at,
            columns: job.columns,
            rows: job.rows,
            rows_url: job.rows_url,
            column_types: job.column_types,
            enqueued_at: now,
            retry: Default::default(),
        };
        self.records.put(&record).await?;
        if let Err(e) = self.queue.push(task).await {
            if let Err(cleanup) = self.records.delete(&record).await {
                tracing::warn!(delivery_id = %record.id, error = %cleanup, "could not remove the record of a failed enqueue");
            }
            return Err(e.into());
        }
        metrics::counter!("courier_enqueued_total").increment(1);
        Ok(record)
    }
}
