//! Throwaway **real** backing services for Courier's tests, `make demo` and `make bench`.
//!
//! This crate owns everything needed to run Courier against the genuine article instead of
//! mocks:
//!
//! * [`RedisServer`]: a private `redis-server` (from `PATH`) on a free port, with its own
//!   temporary directory, AOF persistence (`appendfsync always`) and a log file. It can be
//!   killed with SIGKILL and restarted on the same port and directory, reloading the AOF.
//!   [`RedisServer::shared`] is one server for a whole test binary, whose tests keep apart
//!   under a [`test_namespace`] each.
//! * [`GarageServer`]: a private single-node [Garage](https://garagehq.deuxfleurs.fr/) S3 store
//!   (version [`GARAGE_VERSION`], installed by `scripts/ensure-tools.sh`) on free ports, with
//!   helpers to create buckets and access keys, grant/revoke permissions through the `garage`
//!   CLI, and build an `aws-sdk-s3` client for a key.
//! * [`MotoServer`]: moto's AWS-semantics server (IAM, STS, KMS, S3) from the tools venv,
//!   with IAM enforcement switched on after the test's accounts are set up.
//! * [`SentinelCluster`]: a primary, replicas and three Sentinels, for failover tests.
//! * [`LatencyProxy`]: a TCP proxy on loopback in front of one of them, adding latency (the
//!   bench's store far away) or holding connections until opened (uploads stopped midway).
//! * the `courier-devstack` binary, which starts one of each, writes a shell env file and
//!   waits for SIGINT/SIGTERM.
//!
//! Servers never write to the test's stdout/stderr: their output goes to a log file in their
//! temporary directory, and the tail of that log is included in startup errors. Every server
//! picks its own ports, so any number of them can run in parallel in one test binary. Child
//! processes are killed when the owning struct is dropped.
//!
//! Modules: [`redis`] and [`garage`] (one per service), [`ports`], `process` (running a
//! server as a logged child process) and `tools` (where the binaries are); everything a
//! test needs is re-exported here.
//!
//! The API is synchronous (`std::process`) and can be used from `#[tokio::test]` as well.

pub mod garage;
pub mod moto;
pub mod ports;
mod process;
pub mod proxy;
pub mod redis;
pub mod sentinel;
mod tools;

pub use garage::{GARAGE_REGION, GARAGE_VERSION, GarageServer, S3Key};
pub use moto::{
    MOTO_ACCOUNT, MOTO_REGION, MotoCustomer, MotoFleet, MotoServer, MotoUser, S3Request,
};
pub use ports::free_port;
pub use proxy::LatencyProxy;
pub use redis::{RedisServer, test_namespace};
pub use sentinel::{SENTINEL_SERVICE, SentinelCluster, SentinelServer};
pub use tools::{garage_bin, tools_dir, try_garage_bin};
