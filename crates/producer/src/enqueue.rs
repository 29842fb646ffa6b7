//! Turning a validated "job completed" into a queued delivery task and its record.

use chrono::Utc;
use courier_core::delivery::{DeliveryRecord, DeliveryTask, JobCompleted, RowsSource};
use courier_core::{DeliveryId, DestinationId, TenantId, ValidationErrors};
use courier_store::{DeliveryQueue, DestinationStore, RecordStore, StoreError};

use crate::service::Rules;

/// Why a delivery was not enqueued. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("destination {0} does not exist")]
    DestinationNotFound(DestinationId),
    /// The job breaks a rule the request's own validation cannot see (where its rows are).
    #[error("invalid delivery: {0}")]
    Invalid(ValidationErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Enqueues deliveries. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Producer {
    destinations: DestinationStore,
    records: RecordStore,
    queue: DeliveryQueue,
    rules: Rules,
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
        }
    }

    /// Queues one delivery of `job` for `tenant` and returns its record.
    ///
    /// The rows must be where the workers may read them ([`Rules::check_rows`]), and the
    /// destination must be `tenant`'s.
    ///
    /// The record is written first (status `QUEUED`), then the task is pushed; if the push
    /// fails the record is removed again, so a caller that gets an error may simply retry.
    /// Returns only once Redis holds the task.
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        job: JobCompleted,
    ) -> Result<DeliveryRecord, EnqueueError> {
        self.rules
            .check_rows(&job.rows)
            .await
            .map_err(EnqueueError::Invalid)?;
        let destination = self
            .destinations
            .summary(tenant, &job.destination_id)
            .await?
            .ok_or_else(|| EnqueueError::DestinationNotFound(job.destination_id.clone()))?;
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
        self.records.put(&record).await?;
        if let Err(e) = self.queue.push(task).await {
            if let Err(cleanup) = self.records.delete(&record).await {
                tracing::warn!(delivery_id = %record.id, error = %cleanup, "could not remove the record of a failed enqueue");
            }
            return Err(e.into());
        }
        crate::telemetry::enqueued();
        Ok(record)
    }
}
