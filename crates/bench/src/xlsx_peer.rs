//! Row 7, XLSX: Courier's XLSX renderer against Python's xlsxwriter in constant-memory mode
//! (`crates/bench/peer/xlsx_peer.py`), the same rows written to a file in the same
//! temporary directory, one thread each, median of three passes each (alternating); the
//! rows are built in memory before the clock starts on both sides.

use std::io::BufWriter;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use courier_core::render::{RenderSpec, row_writer};
use courier_core::{Compression, Format};

use crate::peer::peer_dir;
use crate::rows;
use crate::table::{Line, int, mb, rate};

/// Courier must write XLSX at least this many times as fast.
const TARGET: f64 = 8.0;
const PASSES: usize = 3;

pub fn run(python: &Path, n: usize) -> Vec<Line> {
    eprintln!(
        "bench: XLSX, Courier against xlsxwriter, {} rows",
        int(n as u64)
    );
    let line = Line::new("7", "XLSX renderer ÷ xlsxwriter").setup(format!(
        "{} rows to a file, 1 thread, median of {PASSES} alternating passes each; xlsxwriter \
         (constant_memory) from crates/bench/peer/xlsx_peer.py",
        int(n as u64)
    ));
    match measure(python, n) {
        Ok((courier, python_rate, bytes)) => {
            let ratio = courier / python_rate;
            vec![
                line.result(format!(
                    "**{ratio:.1} ×**: Courier {} rows/s, xlsxwriter {} rows/s",
                    rate(courier),
                    rate(python_rate)
                ))
                .detail(format!("Courier's file: {}", mb(bytes)))
                .target(format!(
                    "≥ {TARGET:.0} ×: {}",
                    if ratio >= TARGET {
                        "met"
                    } else {
                        "**NOT met**"
                    }
                )),
            ]
        }
        Err(e) => vec![Line::failed("7", line.measurement, &format!("{e:#}"))],
    }
}

/// Courier's rows/s, xlsxwriter's rows/s, and the size of Courier's file.
fn measure(python: &Path, n: usize) -> anyhow::Result<(f64, f64, u64)> {
    if !python.is_file() {
        bail!(
            "{} does not exist: run scripts/ensure-tools.sh --python (or set BENCH_PYTHON)",
            python.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("courier-bench-xlsx-")
        .tempdir()?;

    let columns = rows::columns();
    let cells: Vec<Vec<Option<serde_json::Value>>> = rows::rows(n)
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c).cloned()).collect())
        .collect();
    let spec = RenderSpec {
        format: Format::Xlsx,
        compression: Compression::None,
        columns,
        ..Default::default()
    };
    let path = dir.path().join("courier.xlsx");
    // Passes alternate between the two, so that a change of load on a shared machine
    // weighs on both sides alike.
    let mut courier = Vec::new();
    let mut python_passes = Vec::new();
    for _ in 0..PASSES {
        let t0 = Instant::now();
        let file = std::fs::File::create(&path)?;
        let mut writer = row_writer(&spec, BufWriter::new(file))?;
        for row in &cells {
            writer.write_cells(row)?;
        }
        writer.finish()?;
        courier.push(t0.elapsed().as_secs_f64());
        python_passes.push(xlsxwriter_pass(python, n, dir.path())?);
    }
    let bytes = std::fs::metadata(&path)?.len();
    Ok((
        n as f64 / median(courier),
        n as f64 / median(python_passes),
        bytes,
    ))
}

/// One timed pass of `xlsx_peer.py` (its start-up and building its rows are not timed).
fn xlsxwriter_pass(python: &Path, n: usize, dir: &Path) -> anyhow::Result<f64> {
    let out = Command::new(python)
        .arg("xlsx_peer.py")
        .arg(n.to_string())
        .arg(dir)
        .arg("1")
        .current_dir(peer_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .context("running xlsx_peer.py")?;
    if !out.status.success() {
        bail!(
            "xlsx_peer.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("xlsx_peer.py's output")?;
    report["seconds"]
        .get(0)
        .and_then(serde_json::Value::as_f64)
        .context("no timed pass in xlsx_peer.py's output")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
