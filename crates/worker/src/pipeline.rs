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
use courier_s3::stream::{self, ObjectTarget, PartWriter, UploadError, Written};
use courier_s3::{ClientCache, S3Failure};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use crate::bounded::{BoundedLines, Deadline, Exceeded, RowLimits};
use crate::source::{self, ByteSource, HttpRows, Staging};

/// The rows of one delivery.
pub enum Rows {
    Inline(InlineRows),
    /// NDJSON bytes, gzip-compressed when `gzip`, read within `limits` (the fetch's
    /// deadline is already in `source`).
    Stream {
        source: ByteSource,
        gzip: bool,
        limits: RowLimits,
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
    /// The caller's `stop` token fired (the delivery lost its object key's lock): the
    /// upload was aborted, or never sent, so this attempt left nothing at the key.
    Stopped,
}

impl PipelineError {
    /// The error as records and dead letters say it.
    pub fn error(&self) -> DeliveryError {
        match self {
            PipelineError::Render(message) => {
                DeliveryError::new(ErrorCode::RenderFailed, message.clone())
            }
            PipelineError::Io(f) => DeliveryError::new(f.code.clone(), f.message.clone()),
            PipelineError::Stopped => DeliveryError::new(
                ErrorCode::KeyLockLost,
                "another delivery took the object key's lock during the upload; the upload \
                 was aborted",
            ),
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
    /// Bounds on rows by reference (`COURIER_MAX_ROW_BYTES`, …).
    pub limits: RowLimits,
}

impl Uploader<'_> {
    /// Streams `task`'s rows, rendered for `dest`, into the object at `key`, unless `stop`
    /// fires first ([`PipelineError::Stopped`]).
    pub async fn upload(
        &self,
        dest: &Destination,
        key: &str,
        task: &DeliveryTask,
        stop: &CancellationToken,
    ) -> Result<Uploaded, PipelineError> {
        let spec = RenderSpec {
            format: dest.spec.format,
            compression: dest.spec.compression,
            columns: task.columns.clone(),
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
            Some(url) => {
                // One deadline for the whole fetch: the request, and every read after it.
                let limit = self.limits.fetch_timeout;
                let deadline = tokio::time::Instant::now() + limit;
                let tenants = [&task.tenant, &dest.tenant];
                let opened = tokio::time::timeout_at(
                    deadline,
                    source::open(url, &tenants, self.staging, self.http),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(exceeded(&Exceeded::FetchTimeout {
                        secs: limit.as_secs(),
                    }))
                })
                .map_err(PipelineError::Io)?;
                Rows::Stream {
                    source: Box::new(Deadline::new(opened, deadline, limit)),
                    gzip: url.is_gzip(),
                    limits: self.limits,
                }
            }
            // The renderer runs on its own thread; the rows' JSON text is copied once.
            None => Rows::Inline(task.rows.clone()),
        };
        let target = ObjectTarget {
            bucket: dest.spec.s3.bucket.as_str(),
            key,
            content_type: dest.spec.format.content_type(),
            content_encoding: dest.spec.compression.content_encoding(),
            write: &dest.spec.s3.write,
        };
        deliver(&client, &target, spec, rows, self.part_size, stop).await
    }
}

/// Renders `rows` as `spec` into the object at `target`, in parts of `part_size` bytes.
/// A failed multipart upload is aborted, so no orphaned parts stay behind. When `stop`
/// fires, the upload is aborted too (a multipart one) or not sent (a single PutObject not
/// sent yet): the object is completed only if `stop` has not fired by then.
pub async fn deliver(
    client: &aws_sdk_s3::Client,
    target: &ObjectTarget<'_>,
    spec: RenderSpec,
    rows: Rows,
    part_size: usize,
    stop: &CancellationToken,
) -> Result<Uploaded, PipelineError> {
    let (tx, rx) = mpsc::channel(1);
    let render = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = render_rows(spec, rows, PartWriter::new(tx, part_size));
        (result, started.elapsed())
    });
    let upload = match stream::upload_parts(client, target, rx, stop).await {
        Ok(pending) => Ok(pending),
        Err(UploadError::Failed(failure, pending)) => Err((failure, pending)),
        Err(UploadError::Stopped(pending)) => {
            if let Some(p) = pending {
                stream::abort(client, target, p).await;
            }
            // The renderer is not waited for (its source may be slow to end): its next
            // part finds the channel closed and it stops there.
            return Err(PipelineError::Stopped);
        }
    };
    let (rendered, render_took) = render
        .await
        .map_err(|e| PipelineError::Render(format!("rendering panicked: {e}")))?;
    match (rendered, upload) {
        (Ok(_), Ok(pending)) if stop.is_cancelled() => {
            stream::abort(client, target, pending).await;
            Err(PipelineError::Stopped)
        }
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
        Rows::Stream {
            source,
            gzip,
            limits,
        } => {
            let bridge = BufReader::with_capacity(256 * 1024, SyncIoBridge::new(source));
            let reader: Box<dyn BufRead> = if gzip {
                Box::new(BufReader::with_capacity(
                    256 * 1024,
                    flate2::bufread::MultiGzDecoder::new(bridge),
                ))
            } else {
                Box::new(bridge)
            };
            // Line by line within the limits: no line is buffered past its limit, and no
            // byte is decompressed past the total one.
            let mut lines = BoundedLines::new(reader, limits);
            let mut first = None;
            while let Some((i, line)) = lines.next_line().map_err(source_err)? {
                if !line.trim().is_empty() {
                    first = Some(parse_line(i, line)?);
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
            while let Some((i, line)) = lines.next_line().map_err(source_err)? {
                if line.trim().is_empty() {
                    continue;
                }
                columns
                    .parse(line, &mut cells)
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

fn parse_line(i: u64, line: &str) -> Result<Row, PipelineError> {
    serde_json::from_str::<Row>(line).map_err(|e| not_an_object(i, &e))
}

fn not_an_object(i: u64, e: &serde_json::Error) -> PipelineError {
    PipelineError::Render(format!("rows line {} is not a JSON object: {e}", i + 1))
}

/// A row stream ran into one of its limits: permanent, with the limit's own code.
fn exceeded(limit: &Exceeded) -> S3Failure {
    S3Failure::new(limit.code(), limit.to_string())
}

/// Reading the source failed mid-stream: a limit (see [`crate::bounded`]) has its own
/// permanent code; otherwise transient for a connection (a cut one), permanent for bad
/// data (a corrupt gzip).
fn source_err(e: std::io::Error) -> PipelineError {
    if let Some(limit) = Exceeded::of(&e) {
        return PipelineError::Io(exceeded(limit));
    }
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
