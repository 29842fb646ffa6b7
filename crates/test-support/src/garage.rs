//! A private single-node Garage (S3) server per test.

use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use tempfile::TempDir;

use crate::ports::{PORT_ATTEMPTS, free_port};
use crate::process::{
    Startup, child_is_running, clean_garage_env, file_len, http_get, http_status, kill_child,
    log_mentions_port_in_use, log_tail, probe, random_hex, spawn_logged,
};
use crate::tools::try_garage_bin;

/// The Garage version the tests are written against (and `scripts/ensure-tools.sh` installs).
pub const GARAGE_VERSION: &str = "2.5.0";
/// The S3 region the test Garage servers are configured with.
pub const GARAGE_REGION: &str = "garage";

/// An S3 access key of a [`GarageServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Key {
    /// The name given at creation.
    pub name: String,
    /// The access key id (`GK…`).
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

/// A private single-node Garage server with its own temporary directory (config, metadata,
/// data, log) and free ports for RPC, the S3 API and the admin API. Killed on drop.
#[derive(Debug)]
pub struct GarageServer {
    dir: TempDir,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    admin_token: String,
    child: Option<Child>,
}

impl GarageServer {
    /// Starts a fresh Garage node with a single-node layout (`garage server --single-node`) and
    /// waits until the cluster is healthy and the S3 API answers.
    pub fn start() -> anyhow::Result<Self> {
        let bin = try_garage_bin()?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("courier-garage-")
                .tempdir()
                .context("cannot create a temporary directory for garage")?;
            let mut server = GarageServer {
                config: dir.path().join("garage.toml"),
                log: dir.path().join("garage.log"),
                dir,
                bin: bin.clone(),
                rpc_port: free_port(),
                s3_port: free_port(),
                admin_port: free_port(),
                admin_token: random_hex(32),
                child: None,
            };
            match server.init() {
                Ok(()) => return Ok(server),
                Err(e) if log_mentions_port_in_use(&server.log, 0) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .expect("at least one attempt")
            .context("no free ports found for garage"))
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>` (stable across restarts).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 region, `"garage"`.
    pub fn region(&self) -> &str {
        GARAGE_REGION
    }

    /// The admin API endpoint, `http://127.0.0.1:<port>` (`/health`, `/metrics`, `/v2/…`).
    pub fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Bearer token for the admin API.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The server's temporary directory (config, `meta/`, `data/`, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `garage.toml`; use it as `garage -c <path> …`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The file the server's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Whether the server process is running (false after [`stop`](Self::stop) or a crash).
    pub fn is_running(&mut self) -> bool {
        child_is_running(&mut self.child)
    }

    /// Runs `garage -c <config> <args…>` against this server and returns its stdout.
    /// Fails with stdout and stderr in the message when the command exits non-zero.
    pub fn cli<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(&self.bin);
        clean_garage_env(&mut cmd);
        let out = cmd
            .env("RUST_LOG", "garage=warn,netapp=warn")
            .arg("-c")
            .arg(&self.config)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`garage {shown}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                stdout
            );
        }
        Ok(stdout)
    }

    /// `garage bucket create <name>`
    pub fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        self.cli(["bucket", "create", name])?;
        Ok(())
    }

    /// `garage key create <name>`; the key id and secret are parsed from its output.
    pub fn create_key(&self, name: &str) -> anyhow::Result<S3Key> {
        let out = self.cli(["key", "create", name])?;
        let field = |label: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .with_context(|| format!("no `{label}` in `garage key create` output:\n{out}"))
        };
        Ok(S3Key {
            name: name.to_owned(),
            id: field("Key ID:")?,
            secret: field("Secret key:")?,
        })
    }

    /// `garage bucket allow [--read] [--write] <bucket> --key <key id>`
    pub fn allow(&self, bucket: &str, key: &S3Key, read: bool, write: bool) -> anyhow::Result<()> {
        self.change_permissions("allow", bucket, key, read, write)
    }

    /// `garage bucket deny [--read] [--write] <bucket> --key <key id>`
    pub fn deny(&self, bucket: &str, key: &S3Key, read: bool, write: bool) -> anyhow::Result<()> {
        self.change_permissions("deny", bucket, key, read, write)
    }

    /// Creates `bucket` and a key named `<bucket>-key` that can read and write it.
    pub fn bucket_with_key(&self, bucket: &str) -> anyhow::Result<S3Key> {
        self.create_bucket(bucket)?;
        let key = self.create_key(&format!("{bucket}-key"))?;
        self.allow(bucket, &key, true, true)?;
        Ok(key)
    }

    /// Kills the server with SIGKILL. Its data and configuration are kept, see
    /// [`start_again`](Self::start_again). Does nothing if it is not running.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts the server again on the same ports and directories and waits until the S3 API
    /// serves requests. Kills the running server first if there is one.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let started = Instant::now();
        let log_offset = file_len(&self.log);
        self.spawn()?;
        let result = self.wait_serving(started, log_offset);
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// The `aws-sdk-s3` configuration for `key`: static credentials, this server's endpoint,
    /// region `garage`, path-style addressing, latest behavior version.
    pub fn s3_config(&self, key: &S3Key) -> aws_sdk_s3::Config {
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(&key.id, &key.secret, None, None, "static"))
            .endpoint_url(self.endpoint())
            .region(Region::new(GARAGE_REGION))
            .force_path_style(true)
            .build()
    }

    /// An `aws-sdk-s3` client for `key`, see [`s3_config`](Self::s3_config).
    pub async fn client(&self, key: &S3Key) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config(key))
    }

    fn change_permissions(
        &self,
        verb: &str,
        bucket: &str,
        key: &S3Key,
        read: bool,
        write: bool,
    ) -> anyhow::Result<()> {
        let mut args = vec!["bucket", verb];
        if read {
            args.push("--read");
        }
        if write {
            args.push("--write");
        }
        args.extend([bucket, "--key", &key.id]);
        self.cli(args)?;
        Ok(())
    }

    /// First start: config, server, readiness.
    fn init(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        for sub in ["meta", "data"] {
            fs::create_dir(self.dir.path().join(sub))?;
        }
        fs::write(&self.config, self.config_toml()).context("cannot write garage.toml")?;
        self.spawn()?;
        let result = self.wait_serving(started, 0);
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn config_toml(&self) -> String {
        let dir = self.dir.path();
        format!(
            r#"# Generated by courier-test-support for a throwaway single-node test server.
metadata_dir = {meta:?}
data_dir = {data:?}
# LMDB with metadata_fsync = false (the default) never fsyncs; SQLite's WAL setup does, which
# made startup take ~0.5 s instead of ~20 ms while other processes were writing to the disk.
# Both engines are in the default build. A 16 GiB map instead of the default 1 TiB keeps many
# parallel servers well inside the address space.
db_engine = "lmdb"
lmdb_map_size = "16GiB"
replication_factor = 1
disable_scrub = true

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "{region}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
            meta = dir.join("meta").display().to_string(),
            data = dir.join("data").display().to_string(),
            rpc = self.rpc_port,
            secret = random_hex(32),
            s3 = self.s3_port,
            region = GARAGE_REGION,
            admin = self.admin_port,
            token = self.admin_token,
        )
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        clean_garage_env(&mut cmd);
        cmd.env("RUST_LOG", "garage=info,netapp=info")
            .env("NO_COLOR", "1")
            .arg("-c")
            .arg(&self.config)
            // Garage 2.x: on first start, give this node the whole layout (zone dc1, capacity =
            // size of the data disk) and apply it as version 1, like `garage layout assign` +
            // `garage layout apply --version 1` but without three CLI round trips (~150 ms).
            // A no-op on restarts, where the layout is already at version 1.
            .args(["server", "--single-node"]);
        let child = spawn_logged(&mut cmd, &self.log)
            .with_context(|| format!("cannot spawn {} server", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server logged that it listens on our S3 and admin ports (so they are
    /// ours, not another process's), `/health` on the admin API is 200 (layout applied,
    /// quorum available), and the S3 API answers an anonymous request with a non-5xx status.
    fn wait_serving(&mut self, started: Instant, log_offset: u64) -> anyhow::Result<()> {
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port));
        let s3 = SocketAddr::from((Ipv4Addr::LOCALHOST, self.s3_port));
        let startup = Startup {
            started,
            what: "garage",
            log: &self.log,
            log_offset,
            markers: vec![
                format!("S3 API server listening on http://{s3}"),
                format!("Admin API server listening on http://{admin}"),
            ],
        };
        startup.wait(&mut self.child, || {
            probe(admin, &http_get("/health"), |reply| {
                http_status(reply) == Some(200)
            }) && probe(s3, &http_get("/"), |reply| {
                http_status(reply).is_some_and(|status| status < 500)
            })
        })
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    #[test]
    fn garage_on_a_taken_port_fails_fast_with_the_log() {
        let Ok(bin) = try_garage_bin() else {
            return; // covered by the integration tests, which need garage anyway
        };
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut server = GarageServer {
            config: dir.path().join("garage.toml"),
            log: dir.path().join("garage.log"),
            dir,
            bin,
            rpc_port: free_port(),
            s3_port: taken.local_addr().unwrap().port(),
            admin_port: free_port(),
            admin_token: random_hex(32),
            child: None,
        };
        let started = Instant::now();
        let err = format!("{:#}", server.init().unwrap_err());
        assert!(err.contains("already in use"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(!server.is_running());
    }
}
