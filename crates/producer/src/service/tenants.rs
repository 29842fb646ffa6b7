//! What a tenant reads before it creates a destination: the ExternalId its roles must
//! require, and the fleet principal they must trust.

use courier_core::TenantId;
use courier_core::destination::ExternalId;

use super::{Service, ServiceError};

/// A tenant's settings for cross-account roles.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// Issued by Courier on first read, stable afterwards.
    pub external_id: ExternalId,
    /// The operator's `COURIER_FLEET_PRINCIPAL`, if set.
    pub fleet_principal: Option<String>,
}

impl Service {
    /// `tenant`'s ExternalId (created on first read) and the fleet's principal.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<TenantSettings, ServiceError> {
        Ok(TenantSettings {
            external_id: self.tenants.external_id(tenant).await?,
            fleet_principal: self.rules.fleet_principal.clone(),
        })
    }
}
