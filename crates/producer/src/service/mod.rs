//! The rules of Courier's control plane, in one layer that every entry point calls: the
//! HTTP handlers ([`crate::api`]), the `courier` commands and the producer library
//! ([`crate::Producer`]). Handlers and commands parse and render; they decide nothing.
//!
//! | module | rules |
//! | --- | --- |
//! | [`rules`] | which endpoints and row references the fleet may be sent to: private endpoints, the staging-bucket rule; the per-tenant [`Quotas`] |
//! | [`destinations`] | tenant ownership, create (within the destinations quota) / update (the saved secret is kept) / delete (refused while deliveries wait, unless forced), connection tests (rate-limited) |
//! | [`tenants`] | what a tenant reads before creating a destination: its ExternalId, the fleet's principal |
//! | [`held`] | when held deliveries flow again: a destination updated, recovered, or deleted |
//! | [`deliveries`] | enqueueing a completed job (within the waiting quota), reading and listing records (one index of the tenant; another tenant's destination is 404), retrying a failed delivery |
//! | [`batches`] | the inspector of batched destinations: a destination's objects (another tenant's destination is 404) |
//! | [`dead_letters`] | replaying a dead letter: its record queued again, its task back in the queue |

pub mod batches;
pub mod dead_letters;
pub mod deliveries;
pub mod destinations;
pub mod held;
pub mod rules;
pub mod tenants;

use courier_core::ValidationErrors;
use courier_store::{
    DeadLetters, DeliveryQueue, DestinationStore, HealthStore, HeldDeliveries, Keys, RecordStore,
    SecretCipher, StoreError, TenantStore,
};
use courier_store::{Idempotency, RateLimiter, RedisConn};

pub use deliveries::IDEMPOTENCY_KEY;
pub use destinations::DestinationWithHealth;
pub use rules::{Quotas, Rules};

use crate::Producer;
use crate::enqueue::ReplicaWait;

/// Why a request was refused. Each maps to one kind of API error and one CLI message.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such destination or delivery for this tenant (another tenant's reads the same).
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    /// The request breaks a rule; each problem names its field.
    #[error("the request is invalid: {0}")]
    Invalid(ValidationErrors),
    /// The request is valid but the state forbids it now; `code` is the API's error code.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Over one of the tenant's quotas or rate limits (`code` `QUOTA_EXCEEDED` or
    /// `RATE_LIMITED`; `limit` names it). Nothing was saved; worth trying again after
    /// `retry_after` (or once the tenant has fewer).
    #[error("{message}")]
    TooMany {
        code: &'static str,
        limit: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },
    /// Redis (or its replicas) could not take the request now; `code` is the API's code.
    /// Nothing was half-saved; retrying (with the same `Idempotency-Key`) is safe.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub(crate) fn not_found(what: &'static str, id: &str) -> Self {
        Self::NotFound {
            what,
            id: id.to_owned(),
        }
    }
}

/// Every rule of the control plane over the stores it needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    rules: Rules,
    destinations: DestinationStore,
    records: RecordStore,
    rate: RateLimiter,
    held: HeldDeliveries,
    dead: DeadLetters,
    health: HealthStore,
    tenants: TenantStore,
    producer: Producer,
}

impl Service {
    /// The service over the Redis behind `conn`, keys under `keys`' namespace. Without a
    /// `cipher`, destinations' secrets cannot be read (enough for dead letters).
    pub fn new(conn: RedisConn, keys: Keys, cipher: Option<SecretCipher>, rules: Rules) -> Self {
        let queue = DeliveryQueue::new(conn.clone(), &keys);
        let destinations = DestinationStore::new(conn.clone(), keys.clone(), cipher);
        let records = RecordStore::new(conn.clone(), keys.clone());
        let replica_wait = ReplicaWait {
            conn: conn.clone(),
            replicas: rules.wait_replicas,
            timeout: rules.wait_replicas_timeout,
        };
        Self {
            producer: Producer::new(
                destinations.clone(),
                records.clone(),
                queue.clone(),
                rules.clone(),
            )
            .with_idempotency(Idempotency::new(conn.clone(), keys.clone()))
            .with_replica_wait(Some(replica_wait)),
            rate: RateLimiter::new(conn.clone(), keys.clone()),
            held: HeldDeliveries::new(conn.clone(), keys.clone(), queue.clone()),
            dead: DeadLetters::new(conn.clone(), keys.clone(), queue),
            tenants: TenantStore::new(conn.clone(), keys.clone()),
            health: HealthStore::new(conn, keys),
            destinations,
            records,
            rules,
        }
    }

    /// The enqueue library, with the same rules.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}
