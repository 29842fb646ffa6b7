//! Rendering a task's rows into a spool file on local disk, off the async runtime.
//!
//! The file, not memory, holds the result between rendering and upload, so a worker's
//! memory does not grow with the size of a result.

use std::io::{BufWriter, Write};
use std::path::Path;

use courier_core::delivery::Row;
use courier_core::render::{RenderError, RenderSpec, row_writer};
use tempfile::NamedTempFile;

/// A rendered file waiting to be uploaded; deleted when dropped.
#[derive(Debug)]
pub struct Rendered {
    pub file: NamedTempFile,
    pub bytes: u64,
    pub rows: u64,
}

/// Renders `rows` as `spec` into a new temp file under `dir` (or the system temp dir).
pub fn render_to_spool(
    spec: &RenderSpec,
    rows: &[Row],
    dir: Option<&Path>,
) -> Result<Rendered, RenderError> {
    let file = match dir {
        Some(d) => NamedTempFile::new_in(d)?,
        None => NamedTempFile::new()?,
    };
    let mut counter = CountingWriter {
        inner: BufWriter::new(file.reopen()?),
        bytes: 0,
    };
    let summary = {
        let mut writer = row_writer(spec, &mut counter)?;
        for row in rows {
            writer.write_row(row)?;
        }
        writer.finish()?
    };
    counter.flush()?;
    Ok(Rendered {
        bytes: counter.bytes,
        rows: summary.rows,
        file,
    })
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
