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

    /// Sorted set of a tenant's destination ids, all scored 0: ids are ULIDs, so the
    /// lexicographic order is the creation order and pages are cut with ZRANGEBYLEX.
    pub fn tenant_destinations(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:destinations", self.ns)
    }

    /// String: the JSON of one delivery record.
    pub fn delivery(&self, id: &DeliveryId) -> String {
        format!("{}:delivery:{id}", self.ns)
    }

    /// Lex-ordered set (score 0) of a tenant's delivery ids; ULIDs sort by enqueue time.
    pub fn tenant_deliveries(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:deliveries", self.ns)
    }

    /// Lex-ordered set of the delivery ids of one destination.
    pub fn destination_deliveries(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:deliveries", self.ns)
    }

    /// Set of the names of the tenant and destination delivery indexes, so that the janitor
    /// finds them without scanning the keyspace.
    pub fn delivery_indexes(&self) -> String {
        format!("{}:delivery-indexes", self.ns)
    }

    /// Lex-ordered set of the delivery ids of one job of one tenant.
    pub fn job_deliveries(&self, tenant: &TenantId, job_id: &str) -> String {
        format!("{}:tenant:{tenant}:job:{job_id}:deliveries", self.ns)
    }

    /// Set of the delivery ids of one destination that are not final yet.
    pub fn destination_pending(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:pending", self.ns)
    }

    /// List of task payloads held while their destination is paused.
    pub fn held(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:held", self.ns)
    }

    /// List of held payloads being moved back to the queue (survives a crash mid-move).
    pub fn releasing(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:releasing", self.ns)
    }

    /// String: JSON health of one destination (consecutive failures, failing since).
    pub fn health(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:health", self.ns)
    }

    /// Set of destination ids currently failing.
    pub fn failing_destinations(&self) -> String {
        format!("{}:failing", self.ns)
    }

    /// Set of destination ids that are paused.
    pub fn paused_destinations(&self) -> String {
        format!("{}:paused", self.ns)
    }

    /// Set of destination ids that may have held deliveries.
    pub fn held_destinations(&self) -> String {
        format!("{}:held-destinations", self.ns)
    }

    /// Sorted set of a destination's upload slot holders, scored by claim expiry (ms).
    pub fn upload_slots(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:upload-slots", self.ns)
    }

    /// String, present for a moment after one of a destination's upload slots is given
    /// back: its uploads are moving, so a full cap is worth waiting for.
    pub fn upload_slots_moved(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:upload-slots:moved", self.ns)
    }

    /// The lock of one object key of a destination.
    pub fn object_lock(&self, id: &DestinationId, key: &str) -> String {
        format!("{}:destination:{id}:object-lock:{key}", self.ns)
    }

    /// The marker of the newest result delivered at one object key.
    pub fn object_marker(&self, id: &DestinationId, key: &str) -> String {
        format!("{}:destination:{id}:object:{key}", self.ns)
    }

    /// Sorted set of dead-lettered delivery ids, scored by when they died (ms).
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.ns)
    }

    /// String: the JSON of one dead letter (reason and task payload).
    pub fn dead_letter(&self, id: &str) -> String {
        format!("{}:dead:{id}", self.ns)
    }

    /// String: what one `Idempotency-Key` of a tenant stands for (the request's fingerprint
    /// and, once queued, its delivery id); kept 24 hours.
    pub fn idempotency(&self, tenant: &TenantId, key: &str) -> String {
        format!("{}:tenant:{tenant}:idempotency:{key}", self.ns)
    }

    /// The apalis-redis queue name; apalis derives its own keys from it.
    pub fn queue(&self) -> String {
        format!("{}:deliveries", self.ns)
    }
}
