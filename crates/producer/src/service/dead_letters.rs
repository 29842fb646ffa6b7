//! Replaying a dead letter: the one way a failed delivery (or an unreadable task) goes back
//! into the queue, for `POST /deliveries/{id}/retry` and `courier dlq replay` alike.

use chrono::Utc;
use courier_core::DeliveryId;
use courier_core::delivery::DeliveryStatus;
use courier_store::{DeadLetter, StoreError};

use super::Service;

impl Service {
    /// Puts `letter` back into the queue, its delivery's record (if it has one) `QUEUED`
    /// again with its attempts kept. The record is written first, so that a worker that takes
    /// the task at once never has its progress overwritten. Returns false, and keeps the
    /// letter, when its payload is not a delivery task.
    pub async fn replay_dead_letter(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        if let Ok(id) = DeliveryId::parse(&letter.id)
            && let Some(mut record) = self.records.get_any(&id).await?
        {
            record.status = DeliveryStatus::Queued;
            record.updated_at = Utc::now();
            self.records.put(&record).await?;
        }
        let replayed = self.dead.replay(letter).await?;
        if replayed {
            tracing::info!(delivery_id = %letter.id, "dead letter replayed");
        }
        Ok(replayed)
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead.list().await
    }
}
