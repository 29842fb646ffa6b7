//! Row 3: the renderers alone, in process, into a byte-counting sink: no queue, no disk,
//! no network. What a worker's CPU can turn into file bytes at best.

use std::io::Write;
use std::time::Instant;

use courier_core::render::{RenderError, RenderSpec, RenderSummary, row_writer};
use courier_core::{Compression, Format};

use crate::rows;
use crate::table::{Line, int, mb, rate};

/// Counts the bytes written and throws them away.
#[derive(Debug, Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Timed passes per renderer.
const PASSES: usize = 5;

pub fn run(n: usize) -> Vec<Line> {
    eprintln!("bench: renderers, {} rows each", int(n as u64));
    // Rows as the worker hands them to a renderer: already read into cells, column order.
    let columns = rows::columns();
    let cells: Vec<Vec<Option<serde_json::Value>>> = rows::rows(n)
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c).cloned()).collect())
        .collect();
    let mut lines = Vec::new();
    for format in Format::ALL {
        // Parquet compresses inside the file (ZSTD by default), never with gzip around it.
        let compressions: &[Compression] = match format {
            Format::Parquet => &[Compression::None],
            _ => &[Compression::None, Compression::Gzip],
        };
        for &compression in compressions {
            let spec = RenderSpec {
                format,
                compression,
                columns: rows::columns(),
                ..Default::default()
            };
            let name = format!(
                "Renderer {}{}",
                format.extension().to_uppercase(),
                match (format, compression) {
                    (Format::Parquet, _) => " (ZSTD inside)",
                    (_, Compression::Gzip) => " + gzip",
                    _ => "",
                }
            );
            // One pass takes well under a second, so timings of a single pass vary by 2x
            // from run to run: an untimed pass first, then the median of five.
            let _ = render(
                &spec,
                &cells[..cells.len().min(20_000)],
                &mut Counter::default(),
            );
            let mut passes = Vec::new();
            let mut result = Ok(RenderSummary { rows: 0 });
            let mut out = Counter::default();
            for _ in 0..PASSES {
                out = Counter::default();
                let t0 = Instant::now();
                result = render(&spec, &cells, &mut out);
                passes.push(t0.elapsed().as_secs_f64());
                if result.is_err() {
                    break;
                }
            }
            passes.sort_by(f64::total_cmp);
            let took = passes[passes.len() / 2];
            let line = Line::new("3", name).setup(format!(
                "{} rows in process into a sink, 1 thread, median of {PASSES} passes",
                int(n as u64)
            ));
            lines.push(match result {
                Ok(summary) => line.result(format!(
                    "**{} rows/s**, {}/s {} ({} in {:.2} s)",
                    rate(summary.rows as f64 / took),
                    mb((out.0 as f64 / took) as u64),
                    if compression == Compression::Gzip || format == Format::Parquet {
                        "compressed"
                    } else {
                        "out"
                    },
                    mb(out.0),
                    took
                )),
                Err(e) => Line::failed("3", line.measurement, &e.to_string()),
            });
        }
    }
    lines
}

fn render(
    spec: &RenderSpec,
    rows: &[Vec<Option<serde_json::Value>>],
    out: &mut Counter,
) -> Result<RenderSummary, RenderError> {
    let mut writer = row_writer(spec, out)?;
    for cells in rows {
        writer.write_cells(cells)?;
    }
    writer.finish()
}
