//! Throwaway **real** backing services for Courier's tests, `make demo` and `make bench`.
//!
//! This crate owns everything needed to run Courier against the genuine article instead of
//! mocks:
//!
//! * [`RedisServer`]: a private `redis-server` (from `PATH`) on a free port, with its own
//!   temporary directory, AOF persistence (`appendfsync always`) and a log file. It can be
//!   killed with SIGKILL and restarted on the same port and directory, reloading the AOF.
//! * [`GarageServer`]: a private single-node [Garage](https://garagehq.deuxfleurs.fr/) S3 store
//!   (version [`GARAGE_VERSION`], installed by `scripts/ensure-tools.sh`) on free ports, with
//!   helpers to create buckets and access keys, grant/revoke permissions through the `garage`
//!   CLI, and build an `aws-sdk-s3` client for a key.
//! * the `courier-devstack` binary, which starts one of each, writes a shell env file and
//!   waits for SIGINT/SIGTERM.
//!
//! Servers never write to the test's stdout/stderr: their output goes to a log file in their
//! temporary directory, and the tail of that log is included in startup errors. Every server
//! picks its own ports, so any number of them can run in parallel in one test binary. Child
//! processes are killed when the owning struct is dropped.
//!
//! The API is synchronous (`std::process`) and can be used from `#[tokio::test]` as well.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use tempfile::TempDir;

/// The Garage version the tests are written against (and `scripts/ensure-tools.sh` installs).
pub const GARAGE_VERSION: &str = "2.5.0";
/// The S3 region the test Garage servers are configured with.
pub const GARAGE_REGION: &str = "garage";

/// How long to wait for a server to become ready before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between cheap readiness probes (a TCP connect and one request).
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of the server log to include in error messages.
const LOG_TAIL_LINES: usize = 40;
/// How many times to retry with fresh ports when a port turned out to be taken.
const PORT_ATTEMPTS: usize = 5;

const ENSURE_TOOLS_HINT: &str = "run scripts/ensure-tools.sh to install the test tools";

/// Directory holding the test tools: `$COURIER_TOOLS`, or `$HOME/.cache/courier/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_TOOLS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".cache/courier/tools")
}

/// Path of the `garage` binary: `$COURIER_GARAGE_BIN`, or `tools_dir()/bin/garage`.
///
/// # Panics
///
/// If the binary does not exist, with a message telling to run `scripts/ensure-tools.sh`.
/// Use [`try_garage_bin`] to get an error instead.
pub fn garage_bin() -> PathBuf {
    try_garage_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Like [`garage_bin`], but returns an error instead of panicking when the binary is missing.
pub fn try_garage_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("COURIER_GARAGE_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("bin/garage"));
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!(
            "garage binary not found at {} ({ENSURE_TOOLS_HINT}, or set COURIER_GARAGE_BIN)",
            bin.display()
        )
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports are never handed out twice by one process, so servers started in parallel by
/// different tests of one binary do not collide with each other. (Another process may still
/// grab the port before the server binds it; the servers retry with fresh ports when that
/// happens.)
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("cannot bind 127.0.0.1:0 to find a free port")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` on a free port of 127.0.0.1, with AOF persistence in its own
/// temporary directory. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (found on `PATH`) and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("courier-redis-")
            .tempdir()
            .context("cannot create a temporary directory for redis")?;
        let log = dir.path().join("redis.log");
        let mut server = RedisServer {
            dir,
            port: 0,
            log,
            child: None,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            let log_offset = file_len(&server.log);
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if log_mentions_port_in_use(&server.log, log_offset) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .expect("at least one attempt")
            .context("no free port found for redis"))
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port the server listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (holds the AOF).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the server's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Whether the server process is running (false after [`kill`](Self::kill) or a crash).
    pub fn is_running(&mut self) -> bool {
        child_is_running(&mut self.child)
    }

    /// Kills the server with SIGKILL (no shutdown, no final save) and reaps it.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts the server again on the same port and directory (the AOF is reloaded) and waits
    /// until it answers `PING`. Kills the running server first if there is one.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let log_offset = file_len(&self.log);
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .args(["--loglevel", "notice"]);
        let child = spawn_logged(&mut cmd, &self.log).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("redis-server not found on PATH ({ENSURE_TOOLS_HINT})")
            } else {
                anyhow!(e).context("cannot spawn redis-server")
            }
        })?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        // The log line proves that *this* process bound the port (and finished loading the
        // AOF); PING proves it serves.
        let startup = Startup {
            started,
            what: "redis-server",
            log: &self.log,
            log_offset,
            markers: vec!["Ready to accept connections".to_owned()],
        };
        let result = startup.wait(&mut self.child, || {
            probe(addr, b"PING\r\n", |reply| reply.starts_with(b"+PONG"))
        });
        if result.is_err() {
            self.kill();
        }
        result
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Garage
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> std::io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
}

/// Removes inherited `GARAGE_*` variables (RPC host, secrets, config file, log format…) that
/// would make the test server or CLI talk to something else.
fn clean_garage_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(name);
        }
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // Fails only if it already exited; wait() reaps it either way.
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn child_is_running(child: &mut Option<Child>) -> bool {
    match child {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => false,
    }
}

/// Fails with the log tail if the child has exited.
fn ensure_alive(what: &str, child: &mut Option<Child>, log: &Path) -> anyhow::Result<()> {
    match child.as_mut().map(Child::try_wait) {
        None => bail!("{what} is not running"),
        Some(Ok(None)) => Ok(()),
        Some(Ok(Some(status))) => {
            *child = None;
            bail!(
                "{what} exited during startup ({status}); log tail:\n{}",
                log_tail(log)
            )
        }
        Some(Err(e)) => Err(anyhow!(e).context(format!("cannot check on {what}"))),
    }
}

/// One server startup being waited for.
struct Startup<'a> {
    started: Instant,
    what: &'a str,
    log: &'a Path,
    /// Where this startup's output begins in the log (restarts append to it).
    log_offset: u64,
    /// Lines the server logs once it has bound its ports.
    markers: Vec<String>,
}

impl Startup<'_> {
    /// Polls every [`PROBE_INTERVAL`] until all markers are in the log and `ready` returns
    /// true. Fails early when the child exits or logs that a port is in use, and after
    /// [`START_TIMEOUT`].
    fn wait(
        &self,
        child: &mut Option<Child>,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let what = self.what;
        loop {
            let output = read_log_since(self.log, self.log_offset);
            if mentions_port_in_use(&output) {
                bail!(
                    "{what}: a port is already in use; log tail:\n{}",
                    log_tail(self.log)
                );
            }
            if self.markers.iter().all(|m| output.contains(m.as_str())) && ready() {
                return Ok(());
            }
            ensure_alive(what, child, self.log)?;
            if self.started.elapsed() > START_TIMEOUT {
                bail!(
                    "{what} not ready after {START_TIMEOUT:?}; log tail:\n{}",
                    log_tail(self.log)
                );
            }
            sleep(PROBE_INTERVAL);
        }
    }
}

/// Connects to `addr`, sends `request`, reads the beginning of the reply and passes it to
/// `check`. Any I/O error counts as "not ready".
fn probe(addr: SocketAddr, request: &[u8], check: impl FnOnce(&[u8]) -> bool) -> bool {
    let attempt = || -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(request)?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(buf[..n].to_vec())
    };
    attempt().is_ok_and(|reply| check(&reply))
}

fn http_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The status code of an HTTP/1.x response head.
fn http_status(reply: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(reply.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(out, "{:02x}", rand::random::<u8>());
    }
    out
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("--- {} ---\n{tail}", path.display())
}

/// What was written to a log file after byte `offset` (empty if it cannot be read).
fn read_log_since(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

fn mentions_port_in_use(output: &str) -> bool {
    output
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// Whether the log written after byte `offset` says a port was taken.
fn log_mentions_port_in_use(path: &Path, offset: u64) -> bool {
    mentions_port_in_use(&read_log_since(path, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn redis_on_a_taken_port_fails_fast_with_the_log() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            log: dir.path().join("redis.log"),
            dir,
            port: taken.local_addr().unwrap().port(),
            child: None,
        };
        let err = format!("{:#}", server.spawn_and_wait().unwrap_err());
        assert!(err.contains("already in use"), "{err}");
        assert!(log_mentions_port_in_use(&server.log, 0));
        assert!(!server.is_running());
    }

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

    #[test]
    fn parses_http_status() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(http_status(b"+PONG\r\n"), None);
        assert_eq!(http_status(b"HTTP/1.1 "), None);
    }

    #[test]
    fn random_hex_has_the_right_length() {
        let hex = random_hex(32);
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
