//! The producing side of Courier: the enqueue library that upstream jobs link
//! ([`Producer`]), and the HTTP control API ([`api`]) through which customers manage
//! destinations and upstream jobs announce completed jobs.
//!
//! Both validate at the edge and answer only once Redis holds the delivery task:
//! a delivery that was acknowledged is never lost, one that was refused leaves nothing.

pub mod api;
mod enqueue;
pub mod stage;
pub mod telemetry;

pub use enqueue::{EnqueueError, Producer};
pub use stage::{StageError, StagingStore};
