//! `courier-devstack`: a throwaway Redis + Garage for `make demo` and `make bench`.
//!
//! Starts one [`RedisServer`] (unless `--redis-url` is given) and one [`GarageServer`],
//! creates a bucket and a read/write key, writes a shell env file with `REDIS_URL`,
//! `S3_ENDPOINT`, `S3_REGION`, `S3_BUCKET`, `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY`,
//! prints one "ready" line to stderr, and runs until SIGINT or SIGTERM. The env file is
//! removed at startup (so waiting for it to appear is meaningful) and on shutdown, and is
//! written atomically.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use courier_test_support::{GarageServer, RedisServer};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Runs a throwaway Redis and Garage for the Courier demo and benchmarks")]
struct Args {
    /// Bucket to create in Garage.
    #[arg(long, default_value = "courier-demo")]
    bucket: String,
    /// Where to write the shell env file (`export NAME=value` lines).
    #[arg(long, default_value = ".courier-demo/env")]
    env_file: PathBuf,
    /// Use this Redis instead of starting one.
    #[arg(long)]
    redis_url: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Install the handlers first so a signal during startup is not lost.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    remove_env_file(&args.env_file)?;
    let started = Instant::now();
    let mut redis = match &args.redis_url {
        Some(_) => None,
        None => Some(RedisServer::start().context("cannot start redis")?),
    };
    let redis_url = match (&args.redis_url, &redis) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => unreachable!("a redis server is started when no --redis-url is given"),
    };
    let mut garage = GarageServer::start().context("cannot start garage")?;
    let key = garage
        .bucket_with_key(&args.bucket)
        .with_context(|| format!("cannot create bucket {} and its key", args.bucket))?;

    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("S3_ENDPOINT", &garage.endpoint()),
        ("S3_REGION", garage.region()),
        ("S3_BUCKET", &args.bucket),
        ("S3_ACCESS_KEY_ID", &key.id),
        ("S3_SECRET_ACCESS_KEY", &key.secret),
    ]
    .iter()
    .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
    .collect::<String>();
    write_env_file(&args.env_file, &env)?;

    eprintln!(
        "courier-devstack ready in {:.1}s: redis {redis_url}, s3 {} bucket {}, env in {} (Ctrl-C to stop)",
        started.elapsed().as_secs_f64(),
        garage.endpoint(),
        args.bucket,
        args.env_file.display()
    );

    let mut health = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = health.tick() => {
                let dead = if !garage.is_running() {
                    Some(("garage", garage.log_tail()))
                } else if let Some(server) = redis.as_mut()
                    && !server.is_running()
                {
                    Some(("redis", server.log_tail()))
                } else {
                    None
                };
                if let Some((name, log_tail)) = dead {
                    // A Ctrl-C in the terminal reaches the servers too (same process group), and
                    // they may exit before our own SIGINT is handled: that is not a failure.
                    let signalled = tokio::time::timeout(Duration::from_millis(500), async {
                        tokio::select! {
                            _ = sigint.recv() => (),
                            _ = sigterm.recv() => (),
                        }
                    });
                    if signalled.await.is_ok() {
                        break Ok(());
                    }
                    break Err(anyhow::anyhow!("{name} exited unexpectedly; {log_tail}"));
                }
            }
        }
    };

    garage.stop();
    if let Some(server) = redis.as_mut() {
        server.kill();
    }
    remove_env_file(&args.env_file)?;
    if outcome.is_ok() {
        eprintln!("courier-devstack stopped");
    }
    outcome
}

/// `value` as a POSIX shell word: as is when it only has safe characters (URLs, key ids,
/// bucket names), single-quoted otherwise.
fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Writes the env file atomically (temp file + rename), creating its directory.
fn write_env_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_env_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
