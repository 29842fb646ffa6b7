//! Courier's state in Redis, shared by the control API and the workers.
//!
//! - [`keys`]: every Redis key Courier uses, built from one namespace.
//! - [`crypto`]: destination secrets are sealed with AES-256-GCM before they reach Redis.
//! - [`destinations`]: customers' destinations, per tenant.
//! - [`records`]: delivery records, the customer-visible history of each delivery.
//! - [`batches`]: batched destinations' open windows, their claims and batch records.
//! - [`queue`]: the apalis-redis queue that carries delivery tasks to the fleet.
//! - [`held`]: deliveries parked while their destination is paused, and their release.
//! - [`dead`]: dead letters, kept with their reason until replayed.
//! - [`health`]: consecutive permanent failures and the FAILING state of destinations.
//! - [`stats`]: a fleet-wide snapshot of the queue for metrics.
//! - [`slots`]: the fleet-wide cap on concurrent uploads per destination.
//! - [`retention`]: the janitor that keeps Redis memory bounded.
//! - [`keyguard`]: per-key locks and markers so an older result never overwrites a newer.
//! - [`claim`](mod@claim): a delivery's key lock, upload slot and marker in one script; [`finish`]:
//!   the end of a delivered upload in one script.
//! - [`quotas`]: per-tenant quotas (checked in the script of the write they bound) and
//!   rate limits.
//! - `scripts`: the Lua scripts behind the atomic operations, one `.lua` file each.
//!
//! All access goes through a [`RedisConn`] ([`conn`]), which reconnects by
//! itself after Redis restarts, so neither the API nor a worker needs restarting.

pub mod batches;
pub mod claim;
pub mod conn;
pub mod crypto;
pub mod dead;
pub mod destinations;
pub mod finish;
pub mod health;
pub mod held;
pub mod idempotency;
pub mod keyguard;
pub mod keys;
pub mod queue;
pub mod quotas;
pub mod records;
pub mod retention;
mod scripts;
pub mod slots;
pub mod stats;
pub mod taken;
pub mod tenants;

pub use batches::{AppendRefused, BatchStore, ClaimedWindow, Entry, WindowClaim, WindowId};
pub use claim::{Claimed, claim};
pub use conn::{RedisConn, RedisTarget, subscribe, wait_for_replicas};
pub use crypto::SecretCipher;
pub use dead::{DeadLetter, DeadLetters};
pub use destinations::{DestinationStore, DestinationSummary, Resealed, SealingKeys};
pub use finish::finish_delivered;
pub use health::{DestinationHealth, HealthStore};
pub use held::HeldDeliveries;
pub use idempotency::{Idempotency, KeyClaim};
pub use keyguard::{KeyGuard, Marker};
pub use keys::{Keys, QueueKeys};
pub use queue::DeliveryQueue;
pub use quotas::{Full, RateDecision, RateLimiter};
pub use records::{Page, RecordFilter, RecordStore};
pub use retention::{Janitor, Swept};
pub use scripts::script_hashes;
pub use slots::{Claim, Concurrency, LimitChange, Released, Signal, UploadSlots};
pub use stats::{QueueStats, StatsReader};
pub use taken::read_taken;
pub use tenants::TenantStore;

/// Errors talking to Redis or decoding what it holds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(String),
    #[error("corrupt {what} in redis: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("COURIER_SECRET_KEY is not set; it is needed to read or write destination secrets")]
    NoSecretKey,
    #[error("secret decryption failed: the destination was saved with another COURIER_SECRET_KEY")]
    Decrypt,
    #[error(
        "the destination's secret was sealed with key {0}, which neither COURIER_SECRET_KEY nor \
         COURIER_PREVIOUS_SECRET_KEYS holds"
    )]
    UnknownSecretKey(String),
    #[error("{acked} of the {wanted} replicas asked for acknowledged the write in time")]
    NotReplicated { wanted: u32, acked: u32 },
}

/// Opens a self-reconnecting connection to the Redis at `url`.
pub async fn connect(url: &str) -> Result<RedisConn, StoreError> {
    RedisConn::connect(&RedisTarget::Url(url.to_owned())).await
}
