//! What the figures were measured on: cores, memory, CPU, kernel, compiler, and the versions
//! of the real services.

use std::path::Path;
use std::process::Command;

/// Lines describing the machine and the services, as Markdown list items.
pub fn describe(courier_bin: &Path, appendfsync: &str) -> Vec<String> {
    let cores = command(&["nproc"]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let memory = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let rustc = command(&["rustc", "--version"]).unwrap_or_else(|| "?".into());
    let redis = command(&["redis-server", "--version"])
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    let garage = courier_test_support::try_garage_bin()
        .ok()
        .and_then(|bin| command(&[&bin.to_string_lossy(), "--version"]))
        .and_then(|v| {
            // "garage cargo:2.5.0 [features: …]" or "garage v2.5.0 …"
            v.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .find(|w| w.matches('.').count() == 2)
                .map(|w| format!("Garage {w}"))
        })
        .unwrap_or_else(|| "Garage ?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    vec![
        format!(
            "- machine: {cores} cores ({cpu}), {memory} RAM, Linux {kernel}; 1-minute load \
             average {load} when the bench started"
        ),
        format!("- compiler: {rustc}, release profile"),
        format!(
            "- services: Redis {redis} (AOF, appendfsync {appendfsync}), {garage} (single node, \
             LMDB), all on loopback"
        ),
        format!("- courier: {}", courier_bin.display()),
    ]
}

fn command(argv: &[&str]) -> Option<String> {
    let out = Command::new(argv[0]).args(&argv[1..]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The value of the first `name: value` line of a /proc file.
fn proc_field(path: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

/// A `/proc/<pid>/status` field in kibibytes (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
