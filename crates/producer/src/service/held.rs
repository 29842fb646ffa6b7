//! When held deliveries flow again. A delivery is held while its destination is paused or
//! failing; these are the only ways out of the held set that the control plane takes (the
//! worker releases too, when a destination recovered while it was holding a task, through
//! the same [`courier_store::HeldDeliveries::release_if_active`]).

use courier_core::DestinationId;
use courier_core::destination::Destination;
use courier_store::StoreError;

use super::Service;

impl Service {
    /// The customer fixed `dest` (updated it, or its connection test passed): its past
    /// failures are forgotten, and if it is active the deliveries held while it was paused
    /// or failing go back to the queue.
    pub(super) async fn recovered(&self, dest: &Destination) -> Result<(), StoreError> {
        self.health.clear(&dest.id).await?;
        self.held
            .release_if_active(&self.destinations, &self.health, &dest.tenant, &dest.id)
            .await?;
        Ok(())
    }

    /// `id` was deleted: its held deliveries go back to the queue, where the workers fail
    /// them as `DestinationNotFound` (dead-lettered, never dropped).
    pub(super) async fn deleted(&self, id: &DestinationId) -> Result<(), StoreError> {
        self.held.release(id).await?;
        Ok(())
    }
}
