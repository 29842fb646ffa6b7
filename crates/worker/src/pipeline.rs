//! Rendering a delivery straight into its upload: rows (inline or streamed from a
//! reference) are rendered on a blocking thread into a [`PartWriter`], whose parts the
//! async side uploads as they come. Memory stays at a few parts whatever the row count.
//! [`Uploader`] is what a delivery calls: the task and its destination in, an object out.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use courier_core::ErrorCode;
use courier_core::TenantId;
use courier_core::cells::ColumnIndex;
use courier_core::delivery::{DeliveryError, DeliveryTask, Row};
use courier_core::destination::Destination;
use courier_core::render::{RenderSpec, row_writer};
use courier_core::rows::{ForEachError, InlineRows};
use courier_s3::stream::{self, ObjectTarget, PartWriter, Written};
use courier_s3::{ClientCache, S3Failure};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::source::{self, ByteSource, HttpRows, Staging};

/// The rows of one delivery.
pub enum Rows {
    Inline(InlineRows),
    /// NDJSON bytes, gzip-compressed when `gzip`.
    Stream {
        source: ByteSource,
        gzip: bool,
    },
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rows::Inline(r) => write!(f, "Rows::{r:?}"),
            Rows::Stream { gzip, .. } => write!(f, "Rows::Stream {{ gzip: {gzip} }}"),
        }
    }
}

/// A delivered object.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub bytes: u64,
    pub rows: u64,
    /// Lowercase hex MD5 of the whole object.
    pub md5: String,
    pub etag: Option<String>,
    /// Time spent rendering (overlaps the upload).
    pub render: Duration,
}

/// Why the pipeline failed.
#[derive(Debug)]
pub enum PipelineError {
    /// The rows could not be read or rendered: permanent.
    Render(String),
    /// The store or the source failed; classified.
    Io(S3Failure),
}

impl PipelineError {
    /// The error as records and dead letters say it.
    pub fn error(&self) -> DeliveryError {
        match self {
            PipelineError::Render(message) => {
                DeliveryError::new(ErrorCode::RenderFailed, message.clone())
            }
            PipelineError::Io(f) => DeliveryError::new(f.code.clone(), f.message.clone()),
        }
    }
}

/// What a delivery needs to render and upload its object.
#[derive(Debug, Clone, Copy)]
pub struct Uploader<'a> {
    /// S3 clients per destination, kept between deliveries.
    pub clients: &'a ClientCache,
    /// Where `s3://` row references are read from.
    pub staging: &'a Staging,
    /// For `http(s)://` row references.
    pub http: &'a HttpRows,
    /// Bytes per multipart part; smaller results go as one PutObject.
    pub part_size: usize,
    /// `COURIER_DEFAULT_CHAIN_TENANTS`: who may use the fleet's own AWS identity.
    pub default_chain_tenants: &'a [TenantId],
}

impl Uploader<'_> {
    /// Streams `task`'s rows, rendered for `dest`, into the object at `key`.
    pub async fn upload(
        &self,
        dest: &Destination,
        key: &str,
        task: &DeliveryTask,
    ) -> Result<Uploaded, PipelineError> {
        let spec = RenderSpec {
            format: dest.spec.format,
            compression: dest.spec.compression,
            columns: task.columns.clone(),
            csv: dest.spec.csv,
            parquet: dest
                .spec
                .parquet
                .clone()
                .with_column_types(&task.column_types),
        };
        // The fleet's identity only for the tenants it is lent to, checked again here
        // whatever the API saw when the destination was saved.
        dest.spec
            .s3
            .credentials
            .lent_to(&dest.tenant, self.default_chain_tenants)
            .map_err(|m| PipelineError::Io(S3Failure::new(ErrorCode::DefaultChainNotAllowed, m)))?;
        // The store first: a refused endpoint should not cost a fetch of the rows.
        let client = self
            .clients
            .get(&dest.id, &dest.spec.s3)
            .await
            .map_err(PipelineError::Io)?;
        let rows = match &task.rows_url {
            Some(url) => Rows::Stream {
                source: source::open(url, self.staging, self.http)
                    .await
                    .map_err(PipelineError::Io)?,
                gzip: url.is_gzip(),
            },
            // The renderer runs on its own thread; the rows' JSON text is copied once.
            None => Rows::Inline(task.rows.clone()),
        };
        let target = ObjectTarget {
            bucket: dest.spec.s3.bucket.as_str(),
            key,
            content_type: dest.spec.format.content_type(),
            content_encoding: dest.spec.compression.content_encoding(),
        };
        deliver(&client, &target, spec, rows, self.part_size).await
    }
}

/// Renders `rows` as `spec` into the object at `target`, in parts of `part_size` bytes.
/// A failed multipart upload is aborted, so no orphaned parts stay behind.
pub async fn deliver(
    client: &aws_sdk_s3::Client,
    target: &ObjectTarget<'_>,
    spec: RenderSpec,
    rows: Rows,
    part_size: usize,
) -> Result<Uploaded, PipelineError> {
    let (tx, rx) = mpsc::channel(1);
    let render = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = render_rows(spec, rows, PartWriter::new(tx, part_size));
        (result, started.elapsed())
    });
    let upload = stream::upload_parts(client, target, rx).await;
    let (rendered, render_took) = render
        .await
        .map_err(|e| PipelineError::Render(format!("rendering panicked: {e}")))?;
    match (rendered, upload) {
        (Ok((written, rows)), Ok(pending)) => {
            let etag = stream::complete(client, target, pending)
                .await
                .map_err(PipelineError::Io)?;
            Ok(Uploaded {
                bytes: written.bytes,
                rows,
                md5: hex(&written.md5),
                etag,
                render: render_took,
            })
        }
        // The store failed: that is the cause, whatever the renderer saw after it.
        (_, Err((failure, pending))) => {
            if let Some(p) = pending {
                stream::abort(client, target, p).await;
            }
            Err(PipelineError::Io(failure))
        }
        (Err(e), Ok(pending)) => {
            stream::abort(client, target, pending).await;
            Err(e)
        }
    }
}

/// The blocking half: rows in, parts out.
fn render_rows(
    mut spec: RenderSpec,
    rows: Rows,
    mut out: PartWriter,
) -> Result<(Written, u64), PipelineError> {
    let render_err = |e: courier_core::render::RenderError| PipelineError::Render(e.to_string());
    let count = match rows {
        Rows::Inline(rows) => {
            let columns = ColumnIndex::new(&spec.columns);
            let mut w = row_writer(&spec, &mut out).map_err(render_err)?;
            let read = rows.for_each_cells(&columns, |cells| w.write_cells(cells));
            read.map_err(|e| match e {
                ForEachError::Stopped(e) => render_err(e),
                ForEachError::Json(e) => {
                    PipelineError::Render(format!("the rows are not JSON objects: {e}"))
                }
            })?;
            w.finish().map_err(render_err)?.rows
        }
        Rows::Stream { source, gzip } => {
            let bridge = BufReader::with_capacity(256 * 1024, SyncIoBridge::new(source));
            let reader: Box<dyn BufRead> = if gzip {
                Box::new(BufReader::with_capacity(
                    256 * 1024,
                    flate2::bufread::MultiGzDecoder::new(bridge),
                ))
            } else {
                Box::new(bridge)
            };
            let mut lines = reader.lines().enumerate();
            let mut first = None;
            for (i, line) in lines.by_ref() {
                let line = line.map_err(source_err)?;
                if !line.trim().is_empty() {
                    first = Some(parse_line(i, &line)?);
                    break;
                }
            }
            if spec.columns.is_empty()
                && let Some(row) = &first
            {
                spec.columns = row.keys().cloned().collect();
            }
            let columns = ColumnIndex::new(&spec.columns);
            let mut w = row_writer(&spec, &mut out).map_err(render_err)?;
            if let Some(row) = first {
                w.write_row(&row).map_err(render_err)?;
            }
            let mut cells = Vec::with_capacity(columns.len());
            for (i, line) in lines {
                let line = line.map_err(source_err)?;
                if line.trim().is_empty() {
                    continue;
                }
                columns
                    .parse(&line, &mut cells)
                    .map_err(|e| not_an_object(i, &e))?;
                w.write_cells(&cells).map_err(render_err)?;
            }
            w.finish().map_err(render_err)?.rows
        }
    };
    let written = out
        .finish()
        .map_err(|e| PipelineError::Io(S3Failure::new(ErrorCode::UploadStopped, e.to_string())))?;
    Ok((written, count))
}

fn parse_line(i: usize, line: &str) -> Result<Row, PipelineError> {
    serde_json::from_str::<Row>(line).map_err(|e| not_an_object(i, &e))
}

fn not_an_object(i: usize, e: &serde_json::Error) -> PipelineError {
    PipelineError::Render(format!("rows line {} is not a JSON object: {e}", i + 1))
}

/// Reading the source failed mid-stream (a cut connection, a corrupt gzip): transient for
/// a connection, permanent for bad data.
fn source_err(e: std::io::Error) -> PipelineError {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
            PipelineError::Render(format!("the rows could not be read: {e}"))
        }
        _ => PipelineError::Io(S3Failure::new(
            ErrorCode::SourceReadFailed,
            format!("reading the rows failed: {e}"),
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
