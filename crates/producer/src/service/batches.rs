//! The inspector of batched destinations: a destination's batch objects.

use courier_core::batch::BatchRecord;
use courier_core::{DestinationId, TenantId};
use courier_store::Page;

use super::{Service, ServiceError};

impl Service {
    /// A page of the objects of `tenant`'s destination `destination` (newest window
    /// first). Another tenant's, a deleted or a missing destination is not found.
    pub async fn batches(
        &self,
        tenant: &TenantId,
        destination: &DestinationId,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<Page<BatchRecord>, ServiceError> {
        if self
            .destinations
            .summary(tenant, destination)
            .await?
            .is_none()
        {
            return Err(ServiceError::not_found("destination", destination.as_str()));
        }
        Ok(self
            .records
            .batches()
            .list(tenant, destination, limit, cursor)
            .await?)
    }
}
