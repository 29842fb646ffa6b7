//! `courier destinations …`: operator commands on destinations, straight against Redis.

use std::time::Duration;

use anyhow::Context as _;
use courier_core::DestinationId;
use courier_producer::{Rules, Service};

use crate::common::{BoundaryArgs, RedisArgs, SecretArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the connection test (HeadBucket, PutObject probe, DeleteObject probe) of a
    /// saved destination; prints the report as JSON and exits 1 if it failed. A passing test
    /// of a failing destination releases its held deliveries, as the API's test does.
    Test {
        /// The destination (`dst_…`).
        id: String,
        /// Seconds each step may take.
        #[arg(long, env = "COURIER_PROBE_TIMEOUT_SECS", default_value_t = 10)]
        timeout_secs: u64,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        secret: SecretArgs,
        /// The tenant egress policy the test connects under, as the workers do.
        #[command(flatten)]
        egress: BoundaryArgs,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Test {
            id,
            timeout_secs,
            redis,
            secret,
            egress,
        } => {
            let id = DestinationId::parse(&id).map_err(anyhow::Error::msg)?;
            let conn = redis.connect().await?;
            let rules = Rules {
                probe_timeout: Duration::from_secs(timeout_secs.max(1)),
                egress: egress.policy()?,
                default_chain_tenants: egress.default_chain_tenants()?,
                ..Rules::default()
            };
            let service = Service::new(conn, redis.keys(), Some(secret.cipher()?), rules);
            let dest = service
                .destination_of_any_tenant(&id)
                .await
                .context("reading the destination")?;
            let report = service
                .test_destination(&dest)
                .await
                .context("recording the test's outcome")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
