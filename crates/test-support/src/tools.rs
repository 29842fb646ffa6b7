//! Where the test tools (the `garage` binary) are installed by `scripts/ensure-tools.sh`.

use std::path::PathBuf;

use anyhow::bail;

pub(crate) const ENSURE_TOOLS_HINT: &str = "run scripts/ensure-tools.sh to install the test tools";

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
