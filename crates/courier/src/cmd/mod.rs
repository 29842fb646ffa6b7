//! One module per subcommand.

pub mod api;
pub mod destinations;
pub mod dlq;
pub mod enqueue;
pub mod secrets;
pub mod worker;
