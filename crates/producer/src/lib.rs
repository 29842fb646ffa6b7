//! The producing side of Courier: the enqueue library that upstream jobs link
//! ([`Producer`]), the service layer that holds every rule of the control plane
//! ([`service`]), the API's wire types ([`wire`]) and the HTTP control API ([`api`]) through
//! which customers manage destinations and upstream jobs announce completed jobs.
//!
//! ```text
//! HTTP handlers (api) ──┐
//! courier commands ─────┼──▶ service::Service ──▶ Producer::enqueue ──▶ Redis (courier-store)
//! upstream jobs ────────┴───────────────────────▶ Producer::enqueue
//! ```
//!
//! Every entry point answers only once Redis holds the delivery task: a delivery that was
//! acknowledged is never lost, one that was refused leaves nothing.

pub mod api;
mod enqueue;
pub mod service;
pub mod stage;
pub mod telemetry;
pub mod wire;

pub use enqueue::{EnqueueError, Enqueued, Producer, ReplicaWait};
pub use service::{Quotas, Rules, Service, ServiceError};
pub use stage::{StageError, StagingStore};
