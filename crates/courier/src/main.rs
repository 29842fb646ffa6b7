//! `courier`: the one binary of the fleet. Each subcommand lives in [`cmd`]; the shared
//! plumbing (logging, metrics listener, shutdown signal, Redis settings) lives beside it.

mod cmd;
mod common;
mod observe;
mod progress;

use clap::{Parser, Subcommand};

/// Courier delivers the results of finished jobs into customers' S3 buckets.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the control API (destinations, deliveries) and its metrics.
    Api(cmd::api::Args),
    /// Take delivery tasks from Redis, render, upload and record them.
    Worker(cmd::worker::Args),
    /// Queue one delivery of a finished job (rows from a JSON or NDJSON file, or stdin).
    Enqueue(cmd::enqueue::Args),
    /// Operator commands on destinations (connection test).
    Destinations(cmd::destinations::Args),
    /// Dead letters: list them, replay them.
    Dlq(cmd::dlq::Args),
    /// Destination secrets: re-seal them with the current key.
    Secrets(cmd::secrets::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Api(args) => cmd::api::run(args).await,
            Command::Worker(args) => cmd::worker::run(args).await,
            Command::Enqueue(args) => cmd::enqueue::run(args).await,
            Command::Destinations(args) => cmd::destinations::run(args).await,
            Command::Dlq(args) => cmd::dlq::run(args).await,
            Command::Secrets(args) => cmd::secrets::run(args).await,
        }
    })
}
