//! Which Redis commands a run's deliveries cost, read from Redis's `MONITOR` stream.
//!
//! `INFO stats total_commands_processed` counts every command Redis ran, including the
//! ones a Lua script runs with `redis.call` and each command of a `MULTI` block. What a
//! client sends (one line each on the `MONITOR` stream with the client's address) and what
//! scripts run inside Redis (`[db lua]` lines, which follow the `EVALSHA` that ran them)
//! are told apart here, by command, and each script is named by its file (Courier's
//! `crates/store/src/lua/` and apalis-redis's `lua/`, matched by SHA-1).
//!
//! `MONITOR` slows Redis down, so only a run that measures nothing else watches it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Context;

/// Counts by command, as clients sent them and as scripts ran them.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Command (an `EVALSHA` by script name) → times a client sent it.
    pub sent: BTreeMap<String, u64>,
    /// Script name → commands it ran inside Redis.
    pub in_scripts: BTreeMap<String, u64>,
}

impl Counts {
    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    pub fn in_scripts_total(&self) -> u64 {
        self.in_scripts.values().sum()
    }

    /// "`name` n.n" per command, most first, per `per` deliveries.
    pub fn sent_breakdown(&self, per: u64) -> String {
        breakdown(&self.sent, per)
    }

    pub fn in_scripts_breakdown(&self, per: u64) -> String {
        breakdown(&self.in_scripts, per)
    }
}

fn breakdown(map: &BTreeMap<String, u64>, per: u64) -> String {
    let mut items: Vec<_> = map.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    items
        .iter()
        .map(|(name, n)| format!("{name} {:.2}", **n as f64 / per.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `redis-cli monitor` on a Redis, counting until [`Monitor::stop`].
pub struct Monitor {
    child: Child,
    counts: Arc<Mutex<Counts>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let names = script_names();
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-cli monitor")?;
        let stdout = child.stdout.take().context("redis-cli's stdout")?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        let reader = std::thread::spawn(move || {
            let mut script = String::from("?");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some((source, command, first_arg)) = parse(&line) else {
                    continue;
                };
                let mut c = shared.lock().unwrap_or_else(|e| e.into_inner());
                if source == "lua" {
                    *c.in_scripts.entry(script.clone()).or_default() += 1;
                    continue;
                }
                let name = match command.as_str() {
                    "evalsha" | "evalsha_ro" => {
                        script = names.get(&first_arg).cloned().unwrap_or_else(|| {
                            format!("script {}", first_arg.get(..8).unwrap_or(&first_arg))
                        });
                        format!("EVALSHA {script}")
                    }
                    "eval" | "eval_ro" => {
                        script = names
                            .get(&sha_of(&first_arg))
                            .cloned()
                            .unwrap_or_else(|| "inline script".into());
                        format!("EVAL {script}")
                    }
                    _ => command.to_uppercase(),
                };
                *c.sent.entry(name).or_default() += 1;
            }
        });
        Ok(Monitor {
            child,
            counts,
            reader: Some(reader),
        })
    }

    /// What was counted so far (the stream keeps running).
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(mut self) -> Counts {
        self.kill();
        self.counts()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `1700000000.123456 [0 127.0.0.1:5555] "evalsha" "abc…" …` → (`127.0.0.1:5555`,
/// `evalsha`, `abc…`); `[0 lua]` lines give `lua`.
fn parse(line: &str) -> Option<(String, String, String)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = line[open + 1..close].split_whitespace().nth(1)?.to_owned();
    let mut quoted = line[close + 1..].split('"').skip(1).step_by(2);
    let command = quoted.next()?.to_ascii_lowercase();
    let first = quoted.next().unwrap_or_default().to_owned();
    Some((source, command, first))
}

/// SHA-1 (hex) of each known script → its file name: Courier's (as the store composes
/// them) and apalis-redis's (`apalis/NAME.lua`, from the crate's source in Cargo's registry).
fn script_names() -> BTreeMap<String, String> {
    let mut names: BTreeMap<String, String> = courier_store::script_hashes()
        .into_iter()
        .map(|(file, sha)| (sha, file.to_owned()))
        .collect();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(registry) = cargo_home.map(|h| h.join("registry/src")) else {
        return names;
    };
    for index in std::fs::read_dir(registry).into_iter().flatten().flatten() {
        for krate in std::fs::read_dir(index.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if !krate
                .file_name()
                .to_string_lossy()
                .starts_with("apalis-redis-")
            {
                continue;
            }
            for file in std::fs::read_dir(krate.path().join("lua"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(source) = std::fs::read_to_string(file.path()) {
                    let name = format!("apalis/{}", file.file_name().to_string_lossy());
                    names.insert(sha_of(&source), name);
                }
            }
        }
    }
    names
}

fn sha_of(source: &str) -> String {
    redis::Script::new(source).get_hash().to_owned()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_client_and_script_lines() {
        assert_eq!(
            parse(r#"1796061832.811299 [0 127.0.0.1:36502] "evalsha" "ab12" "0""#),
            Some(("127.0.0.1:36502".into(), "evalsha".into(), "ab12".into()))
        );
        assert_eq!(
            parse(r#"1796061832.811349 [0 lua] "SET" "a" "1""#),
            Some(("lua".into(), "set".into(), "a".into()))
        );
        assert_eq!(
            parse(r#"1796061832.818376 [0 127.0.0.1:36514] "MULTI""#),
            Some(("127.0.0.1:36514".into(), "multi".into(), String::new()))
        );
    }
}
