//! Running a server as a child process: its output goes to a log file, startup is waited
//! for by polling the log and a cheap request, and the child is killed and reaped on demand.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// How long to wait for a server to become ready before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between cheap readiness probes (a TCP connect and one request).
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of the server log to include in error messages.
const LOG_TAIL_LINES: usize = 40;

/// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> std::io::Result<Child> {
    spawn_logged_with_stdin(cmd, log, Stdio::null())
}

/// Like [`spawn_logged`], with the given stdin.
pub(crate) fn spawn_logged_with_stdin(
    cmd: &mut Command,
    log: &Path,
    stdin: Stdio,
) -> std::io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(stdin)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
}

/// Removes inherited `GARAGE_*` variables (RPC host, secrets, config file, log format…) that
/// would make the test server or CLI talk to something else.
pub(crate) fn clean_garage_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(name);
        }
    }
}

pub(crate) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // Fails only if it already exited; wait() reaps it either way.
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub(crate) fn child_is_running(child: &mut Option<Child>) -> bool {
    match child {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => false,
    }
}

/// Fails with the log tail if the child has exited.
pub(crate) fn ensure_alive(
    what: &str,
    child: &mut Option<Child>,
    log: &Path,
) -> anyhow::Result<()> {
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
pub(crate) struct Startup<'a> {
    pub(crate) started: Instant,
    pub(crate) what: &'a str,
    pub(crate) log: &'a Path,
    /// Where this startup's output begins in the log (restarts append to it).
    pub(crate) log_offset: u64,
    /// Lines the server logs once it has bound its ports.
    pub(crate) markers: Vec<String>,
}

impl Startup<'_> {
    /// Polls every [`PROBE_INTERVAL`] until all markers are in the log and `ready` returns
    /// true. Fails early when the child exits or logs that a port is in use, and after
    /// [`START_TIMEOUT`].
    pub(crate) fn wait(
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
pub(crate) fn probe(addr: SocketAddr, request: &[u8], check: impl FnOnce(&[u8]) -> bool) -> bool {
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

pub(crate) fn http_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The status code of an HTTP/1.x response head.
pub(crate) fn http_status(reply: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(reply.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(out, "{:02x}", rand::random::<u8>());
    }
    out
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("--- {} ---\n{tail}", path.display())
}

/// What was written to a log file after byte `offset` (empty if it cannot be read).
pub(crate) fn read_log_since(path: &Path, offset: u64) -> String {
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

pub(crate) fn mentions_port_in_use(output: &str) -> bool {
    output
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// Whether the log written after byte `offset` says a port was taken.
pub(crate) fn log_mentions_port_in_use(path: &Path, offset: u64) -> bool {
    mentions_port_in_use(&read_log_since(path, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

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
