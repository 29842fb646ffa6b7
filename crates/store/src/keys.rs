//! Every Redis key Courier writes, built from one namespace so that several
//! deployments (or tests) can share one Redis without seeing each other.

use courier_core::{DeliveryId, DestinationId, TenantId};

/// Key builder. The default namespace is `courier`.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("courier")
    }
}

impl Keys {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            ns: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// String: the JSON of one destination.
    pub fn destination(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}", self.ns)
    }

    /// Sorted set of a tenant's destination ids, scored by creation time (ms).
    pub fn tenant_destinations(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:destinations", self.ns)
    }

    /// String: the JSON of one delivery record.
    pub fn delivery(&self, id: &DeliveryId) -> String {
        format!("{}:delivery:{id}", self.ns)
    }

    /// Sorted set of a tenant's delivery ids, scored by enqueue time (ms).
    pub fn tenant_deliveries(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:deliveries", self.ns)
    }

    /// The apalis-redis queue name; apalis derives its own keys from it.
    pub fn queue(&self) -> String {
        format!("{}:deliveries", self.ns)
    }
}
