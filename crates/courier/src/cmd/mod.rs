//! One module per subcommand.

pub mod api;
pub mod enqueue;
pub mod worker;
