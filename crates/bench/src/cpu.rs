//! CPU time per process, from `/proc/<pid>/stat`, to say where the time of a run goes:
//! on a small machine the processes of a delivery (worker, API, Redis, Garage) share the
//! same cores, so their CPU time per delivery bounds the rate.

use std::process::Command;
use std::sync::OnceLock;

/// user + system CPU seconds a process has used so far (all its threads).
pub fn seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are utime and stime; `after` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / ticks_per_second())
}

/// CPU seconds the whole machine has been busy (all cores), from `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: everything but idle and iowait.
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(busy as f64 / ticks_per_second())
}

/// CPU seconds of this process and of its children that have been waited for (the
/// servers and `courier` processes the bench started and stopped).
pub fn own_and_children_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.len() == 4).then(|| f.iter().sum::<u64>() as f64 / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The first process whose command line starts with `program` and has the word `word`.
pub fn find(program: &str, word: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let mut words = cmdline.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.rsplit('/').next() == Some(program) && words.any(|w| w == word) {
            return Some(pid);
        }
    }
    None
}

/// CPU seconds of named groups of processes, taken twice to get what a run used.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    groups: Vec<(&'static str, f64)>,
}

impl Sample {
    /// CPU seconds of each group now; a process that is gone counts as zero.
    pub fn take(groups: &[(&'static str, Vec<u32>)]) -> Sample {
        Sample {
            groups: groups
                .iter()
                .map(|(name, pids)| (*name, pids.iter().filter_map(|p| seconds(*p)).sum::<f64>()))
                .collect(),
        }
    }

    /// `worker 9.1 ms, Redis 1.2 ms, …` per unit of work between `self` and `later`.
    pub fn per_unit(&self, later: &Sample, units: u64) -> String {
        let parts: Vec<String> = self
            .groups
            .iter()
            .zip(&later.groups)
            .map(|((name, before), (_, after))| {
                format!(
                    "{name} {:.2} ms",
                    (after - before) * 1000.0 / units.max(1) as f64
                )
            })
            .collect();
        parts.join(", ")
    }

    /// The CPU seconds of the first group between `self` and `later`.
    pub fn first(&self, later: &Sample) -> f64 {
        match (self.groups.first(), later.groups.first()) {
            (Some((_, before)), Some((_, after))) => after - before,
            _ => 0.0,
        }
    }

    /// The CPU seconds of all groups between `self` and `later`.
    pub fn total(&self, later: &Sample) -> f64 {
        self.groups
            .iter()
            .zip(&later.groups)
            .map(|((_, before), (_, after))| after - before)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let me = std::process::id();
        let t = seconds(me).expect("own /proc/<pid>/stat");
        assert!(t >= 0.0);
    }
}
