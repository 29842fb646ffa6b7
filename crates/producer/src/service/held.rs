//! When held deliveries flow again. A delivery is held while its destination is paused or
//! failing; these are the only ways out of the held set that the control plane takes (the
//! worker releases too, when a destination recovered while it was holding a task).

use courier_core::DestinationId;
use courier_core::destination::{Destination, DestinationStatus};
use courier_store::StoreError;

use super::Service;

impl Service {
    /// The customer fixed `dest` (updated it, or its connection test passed): its past
    /// failures are forgotten, and if it is active the deliveries held while it was paused
    /// or failing go back to the queue.
    pub(super) async fn recovered(&self, dest: &Destination) -> Result<(), StoreError> {
        self.health.clear(&dest.id).await?;
        if dest.spec.status == DestinationStatus::Active {
            self.release_held(&dest.id).await?;
        }
        Ok(())
    }

    /// `id` was deleted: its held deliveries go back to the queue, where the workers fail
    /// them as `DestinationNotFound` (dead-lettered, never dropped).
    pub(super) async fn deleted(&self, id: &DestinationId) -> Result<(), StoreError> {
        self.release_held(id).await
    }

    async fn release_held(&self, id: &DestinationId) -> Result<(), StoreError> {
        let released = self.held.release(id).await?;
        if released > 0 {
            tracing::info!(destination_id = %id, released, "held deliveries released");
        }
        Ok(())
    }
}
