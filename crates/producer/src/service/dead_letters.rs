//! Replaying a dead letter: the one way a failed delivery (or an unreadable task) goes back
//! into the queue, for `POST /deliveries/{id}/retry` and `courier dlq replay` alike.

use courier_store::{DeadLetter, StoreError};

use super::Service;

impl Service {
    /// Puts `letter` back into the queue, its delivery's record (if it has one) `QUEUED`
    /// again with its attempts kept, in one transaction ([`courier_store::DeadLetters::replay`]):
    /// the task is queued and the record marked together, or neither. Returns false, and
    /// keeps the letter, when its payload is not a delivery task; false too when another
    /// replay of it is under way or replayed it already (the task is queued once).
    pub async fn replay_dead_letter(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
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
