//! Rendering a delivery straight into its upload: rows (inline or streamed from a
//! reference) are rendered on a blocking thread into a [`PartWriter`], whose parts the
//! async side uploads as they come. Rows by reference are decompressed and cut into lines
//! on a second thread, a few line batches ahead of the renderer, so that both cores work on
//! a big delivery. Memory stays at a few parts whatever the row count.
//! [`Uploader`] is what a delivery calls: the task and its destination in, an object out.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use courier_core::ErrorCode;
use courier_core::TenantId;
use courier_core::cells::ColumnIndex;
use courier_core::delivery::{DeliveryError, DeliveryTask, Row};
use courier_core::destination::Destination;
use courier_core::failure::ErrorClass;
use courier_core::render::{RenderError, RenderSpec, row_writer};
use courier_core::rows::{ForEachError, InlineRows};
use courier_s3::stream::{self, ObjectTarget, PartWriter, UploadError, Written};
use courier_s3::{ClientCache, S3Failure};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use crate::bounded::{BoundedLines, Deadline, Exceeded, RowLimits};
use crate::source::{self, ByteSource, HttpRows, Staging};
use crate::streams::StreamedDeliveries;

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
    /// Time spent waiting for a turn among the worker's deliveries of rows by reference
    /// (`COURIER_MAX_STREAMED_DELIVERIES`) before the rows were opened: the worker's own
    /// queueing, not the store's latency.
    pub waited: Duration,
}

/// Why the pipeline failed, by where it failed: [`crate::decide`] charges each to who
/// caused it.
#[derive(Debug)]
pub enum PipelineError {
    /// The rows could not be rendered (not JSON objects, a value that does not fit, a cell
    /// too long for Excel, …): permanent, the rows' doing.
    Render(String),
    /// The rows' source failed while being opened or read (`rowsUrl`: its server or the
    /// staging store answered an error, the reference is not allowed, the stream broke):
    /// classified by its code, the rows' doing whatever the code.
    Source(S3Failure),
    /// The worker's own disk or temporary files failed while rendering (disk full, an XLSX
    /// sheet's spool file): transient, Courier's doing.
    Local(String),
    /// The destination's store failed; classified and charged by its code.
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
            PipelineError::Local(message) => {
                DeliveryError::new(ErrorCode::LocalIoFailed, message.clone())
            }
            PipelineError::Source(f) => DeliveryError::new(f.code.clone(), f.message.clone()),
        }
    }

    /// Transient (worth another try) or permanent.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Render(_) => ErrorClass::Permanent,
            PipelineError::Local(_) => ErrorClass::Transient,
            PipelineError::Source(f) | PipelineError::Io(f) => f.class(),
            PipelineError::Stopped => ErrorClass::Transient,
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
    /// How many deliveries of rows by reference may run at once
    /// (`COURIER_MAX_STREAMED_DELIVERIES`).
    pub streams: &'a StreamedDeliveries,
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
        // Held until the upload ends: a streamed delivery's buffers count against the
        // worker's bound on them.
        let mut _streaming = None;
        let mut waited = Duration::ZERO;
        let rows = match &task.rows_url {
            Some(url) => {
                let (turn, took) = self.take_turn(stop).await?;
                (_streaming, waited) = (Some(turn), took);
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
                .map_err(PipelineError::Source)?;
                Rows::Stream {
                    source: Box::new(Deadline::new(opened, deadline, limit)),
                    gzip: url.is_gzip(),
                    limits: self.limits,
                }
            }
            // The renderer runs on its own thread; the rows' JSON text is copied once. Big
            // inline rows (up to the API's body limit) hold as much memory as a streamed
            // delivery's buffers, so they take a turn among those too.
            None => {
                if task.rows.as_json().len() > BIG_INLINE_ROWS {
                    let (turn, took) = self.take_turn(stop).await?;
                    (_streaming, waited) = (Some(turn), took);
                }
                Rows::Inline(task.rows.clone())
            }
        };
        let target = ObjectTarget {
            bucket: dest.spec.s3.bucket.as_str(),
            key,
            content_type: dest.spec.format.content_type(),
            content_encoding: dest.spec.compression.content_encoding(),
            write: &dest.spec.s3.write,
        };
        deliver(&client, &target, spec, rows, self.part_size, stop)
            .await
            .map(|up| Uploaded { waited, ..up })
            .map_err(|e| match e {
                PipelineError::Io(f) => PipelineError::Io(f.naming_expected_owner(target.write)),
                other => other,
            })
    }
}

impl Uploader<'_> {
    /// Waits for a turn among the worker's streamed deliveries
    /// (`COURIER_MAX_STREAMED_DELIVERIES`); the turn, held until dropped, and how long the
    /// wait was. [`PipelineError::Stopped`] if `stop` fires first.
    async fn take_turn(
        &self,
        stop: &CancellationToken,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Duration), PipelineError> {
        let t0 = Instant::now();
        let turn = self
            .streams
            .enter(stop)
            .await
            .ok_or(PipelineError::Stopped)?;
        Ok((turn, t0.elapsed()))
    }
}

/// Inline rows of more JSON than this count against `COURIER_MAX_STREAMED_DELIVERIES`, as
/// rows by reference do: rendering them holds their text, a copy and a part in memory.
pub const BIG_INLINE_ROWS: usize = 1024 * 1024;

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
    let (rendered, render_took) = match render.await {
        Ok(done) => done,
        Err(e) => {
            // The renderer is gone without finishing: whatever was uploaded is not a file.
            if let Ok(pending) | Err((_, Some(pending))) = upload {
                stream::abort(client, target, pending).await;
            }
            return Err(render_panicked(e));
        }
    };
    match (rendered, upload) {
        (Ok(_), Ok(pending)) if stop.is_cancelled() => {
            stream::abort(client, target, pending).await;
            Err(PipelineError::Stopped)
        }
        (Ok((written, rows)), Ok(pending)) => {
            let md5 = pending.md5();
            let etag = stream::complete(client, target, pending)
                .await
                .map_err(PipelineError::Io)?;
            Ok(Uploaded {
                bytes: written.bytes,
                rows,
                md5: hex(&md5),
                etag,
                render: render_took,
                waited: Duration::ZERO,
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
    let count = match rows {
        Rows::Inline(rows) => {
            let columns = ColumnIndex::new(&spec.columns);
            let mut w = row_writer(&spec, &mut out).map_err(render_failed)?;
            let read = rows.for_each_cells(&columns, |cells| w.write_cells(cells));
            read.map_err(|e| match e {
                ForEachError::Stopped(e) => render_failed(e),
                ForEachError::Json(e) => {
                    PipelineError::Render(format!("the rows are not JSON objects: {e}"))
                }
            })?;
            w.finish().map_err(render_failed)?.rows
        }
        Rows::Stream {
            source,
            gzip,
            limits,
        } => {
            // Decompressing and cutting lines (within the limits) run on a thread of their
            // own, a bounded number of line batches ahead of parsing and rendering here.
            let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
            tokio::task::spawn_blocking(move || read_batches(source, gzip, limits, &tx));
            let mut batches = Batches::new(rx);
            let mut first = None;
            while let Some((i, line)) = batches.next_line()? {
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
            let mut w = row_writer(&spec, &mut out).map_err(render_failed)?;
            if let Some(row) = first {
                w.write_row(&row).map_err(render_failed)?;
            }
            let mut cells = Vec::with_capacity(columns.len());
            while let Some((i, line)) = batches.next_line()? {
                if line.trim().is_empty() {
                    continue;
                }
                columns
                    .parse(line, &mut cells)
                    .map_err(|e| not_an_object(i, &e))?;
                w.write_cells(&cells).map_err(render_failed)?;
            }
            w.finish().map_err(render_failed)?.rows
        }
    };
    let written = out
        .finish()
        .map_err(|e| PipelineError::Io(S3Failure::new(ErrorCode::UploadStopped, e.to_string())))?;
    Ok((written, count))
}

/// Line batches of about this many bytes go from the reader thread to the renderer.
const BATCH_BYTES: usize = 256 * 1024;

/// Batches the reader may be ahead of the renderer (besides the one each is working on):
/// with [`BATCH_BYTES`], about a megabyte of rows in flight.
const BATCHES_AHEAD: usize = 4;

/// Consecutive NDJSON lines, their line breaks removed.
#[derive(Debug)]
struct LineBatch {
    /// The 0-based index of the first line.
    first: u64,
    /// The lines, one after another.
    text: String,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
}

impl LineBatch {
    fn new(first: u64) -> Self {
        Self {
            first,
            text: String::with_capacity(BATCH_BYTES + BATCH_BYTES / 4),
            ends: Vec::new(),
        }
    }

    /// Line `k` of the batch, with its index among all lines.
    fn line(&self, k: usize) -> Option<(u64, &str)> {
        let end = *self.ends.get(k)?;
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        Some((self.first + k as u64, &self.text[start..end]))
    }
}

/// What the reader thread sends: batches of lines, then either the end or why it stopped.
/// A reader that is gone without saying either (it panicked) is an error, never the end.
#[derive(Debug)]
enum Batch {
    Lines(LineBatch),
    End,
    Failed(PipelineError),
}

/// The reader thread: decompresses `source` and cuts it into lines within `limits` (no
/// line is buffered past its limit, no byte decompressed past the total one), sending
/// them in batches. Lines before a failure are sent before it, so that the renderer meets
/// every problem in the order of the rows. Stops as soon as the renderer is gone.
fn read_batches(source: ByteSource, gzip: bool, limits: RowLimits, tx: &SyncSender<Batch>) {
    let bridge = BufReader::with_capacity(256 * 1024, SyncIoBridge::new(source));
    let reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(bridge),
        ))
    } else {
        Box::new(bridge)
    };
    let mut lines = BoundedLines::new(reader, limits);
    let mut batch = LineBatch::new(0);
    let last = loop {
        match lines.next_line() {
            Ok(Some((i, line))) => {
                if batch.ends.is_empty() {
                    batch.first = i;
                }
                batch.text.push_str(line);
                batch.ends.push(batch.text.len());
                if batch.text.len() >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, LineBatch::new(i + 1));
                    if tx.send(Batch::Lines(full)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break Batch::End,
            Err(e) => break Batch::Failed(source_err(e)),
        }
    };
    if !batch.ends.is_empty() && tx.send(Batch::Lines(batch)).is_err() {
        return;
    }
    let _ = tx.send(last);
}

/// The renderer's end of the reader thread's batches.
struct Batches {
    rx: Receiver<Batch>,
    batch: Option<LineBatch>,
    /// The next line of `batch`.
    at: usize,
    /// The reader said it reached the end.
    ended: bool,
}

impl Batches {
    fn new(rx: Receiver<Batch>) -> Self {
        Self {
            rx,
            batch: None,
            at: 0,
            ended: false,
        }
    }

    /// The next line with its index, `None` at the end of the rows.
    fn next_line(&mut self) -> Result<Option<(u64, &str)>, PipelineError> {
        loop {
            if let Some(batch) = &self.batch
                && self.at < batch.ends.len()
            {
                break;
            }
            if self.ended {
                return Ok(None);
            }
            match self.rx.recv() {
                Ok(Batch::Lines(batch)) => {
                    self.batch = Some(batch);
                    self.at = 0;
                }
                Ok(Batch::End) => {
                    self.ended = true;
                    self.batch = None;
                    return Ok(None);
                }
                Ok(Batch::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(PipelineError::Render(
                        "reading the rows stopped unexpectedly (the reader thread panicked)"
                            .to_owned(),
                    ));
                }
            }
        }
        let k = self.at;
        self.at += 1;
        Ok(self.batch.as_ref().and_then(|b| b.line(k)))
    }
}

/// A renderer's error: the worker's own I/O (the sink's or a temporary file's) is local and
/// transient, everything else is about the rows. (A sink that failed because the upload
/// stopped is never reported as such: the store's failure wins, see [`deliver`].)
fn render_failed(e: RenderError) -> PipelineError {
    match e {
        RenderError::Io(io) => PipelineError::Local(format!(
            "the worker could not write the rendered file locally: {io}"
        )),
        other => PipelineError::Render(other.to_string()),
    }
}

/// What `rust_xlsxwriter` panics with when it cannot write a sheet's temporary file: it
/// `expect`s those writes instead of returning their error.
const XLSX_SPOOL_PANIC: &str = "Couldn't write to xml file";

/// The renderer's thread panicked. `rust_xlsxwriter` panics when a constant-memory sheet's
/// temporary file cannot be written (a full disk): that is local I/O, worth another try.
/// Any other panic is a bug met while rendering these rows.
fn render_panicked(e: tokio::task::JoinError) -> PipelineError {
    let message = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(e) => e.to_string(),
    };
    classify_panic(&message)
}

fn classify_panic(message: &str) -> PipelineError {
    match message.strip_prefix(XLSX_SPOOL_PANIC) {
        Some(detail) => PipelineError::Local(format!(
            "the worker could not write an XLSX sheet's temporary file{detail}"
        )),
        None => PipelineError::Render(format!("rendering panicked: {message}")),
    }
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
        return PipelineError::Source(exceeded(limit));
    }
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
            PipelineError::Render(format!("the rows could not be read: {e}"))
        }
        _ => PipelineError::Source(S3Failure::new(
            ErrorCode::SourceReadFailed,
            format!("reading the rows failed: {e}"),
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::io;

    use courier_core::failure::ErrorClass;

    use super::*;

    /// What the render thread's panic would carry: `rust_xlsxwriter` `expect`s its
    /// temporary-file writes, so a full disk reaches us as this message.
    fn xlsx_spool_panic() -> String {
        let full = io::Error::from(io::ErrorKind::StorageFull);
        format!("{XLSX_SPOOL_PANIC}: {full:?}")
    }

    #[test]
    fn a_full_disk_while_spooling_xlsx_is_local_and_transient() {
        let e = classify_panic(&xlsx_spool_panic());
        let PipelineError::Local(message) = &e else {
            panic!("{e:?}")
        };
        assert!(
            message.starts_with("the worker could not write an XLSX sheet's temporary file: "),
            "{message}"
        );
        assert!(message.contains("StorageFull"), "{message}");
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(e.error().code, "LocalIoFailed");

        // Any other panic is a bug met while rendering: permanent, not retried forever.
        let e = classify_panic("index out of bounds");
        assert!(
            matches!(&e, PipelineError::Render(m) if m == "rendering panicked: index out of bounds")
        );
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    fn explode(message: String) {
        panic!("{message}")
    }

    #[tokio::test]
    async fn a_real_panic_of_the_render_thread_is_classified_by_its_message() {
        let spool = xlsx_spool_panic();
        let join = tokio::task::spawn_blocking(move || explode(spool))
            .await
            .unwrap_err();
        assert!(matches!(render_panicked(join), PipelineError::Local(_)));
        let join = tokio::task::spawn_blocking(|| explode("a bug".into()))
            .await
            .unwrap_err();
        assert!(matches!(render_panicked(join), PipelineError::Render(m) if m.ends_with("a bug")));
    }

    /// A writer whose disk is full, as a temporary file on a full disk would be.
    struct FullDisk;

    impl io::Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every format's writer on a failing local writer: the error is local I/O (transient,
    /// `LocalIoFailed`), never `RenderFailed`, which would give up at once.
    #[test]
    fn a_failing_local_writer_is_local_io_in_every_format() {
        let rows = vec![serde_json::from_str::<Row>(r#"{"a": "x"}"#).unwrap()];
        for format in courier_core::Format::ALL {
            let spec = RenderSpec {
                format,
                columns: vec!["a".into()],
                ..Default::default()
            };
            let err = courier_core::render::render_all(&spec, &rows, FullDisk)
                .expect_err("the disk is full");
            let e = render_failed(err);
            assert!(matches!(e, PipelineError::Local(_)), "{format:?}: {e:?}");
            assert_eq!(e.class(), ErrorClass::Transient, "{format:?}");
            let error = e.error();
            assert_eq!(error.code, "LocalIoFailed", "{format:?}");
            assert!(
                error.message.contains("No space left on device"),
                "{format:?}: {}",
                error.message
            );
        }
        // What the rows cause stays the rows' and permanent.
        let e = render_failed(RenderError::TooManyRows { limit: 4 });
        assert!(matches!(e, PipelineError::Render(_)));
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    /// Every line the reader thread reads from a gzip stream, in `Batches`' order.
    async fn read_through_batches(
        text: String,
        limits: RowLimits,
    ) -> (Vec<(u64, String)>, Option<PipelineError>) {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let source: ByteSource = Box::new(io::Cursor::new(enc.finish().unwrap()));
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
            tokio::task::spawn_blocking(move || read_batches(source, true, limits, &tx));
            let mut batches = Batches::new(rx);
            let mut seen = Vec::new();
            let stopped = loop {
                match batches.next_line() {
                    Ok(Some((i, line))) => seen.push((i, line.to_owned())),
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            // The end stays the end.
            if stopped.is_none() {
                assert!(matches!(batches.next_line(), Ok(None)));
            }
            (seen, stopped)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn batches_carry_every_line_in_order_with_its_index() {
        let mut text = String::new();
        for i in 0..30_000 {
            text.push_str(&format!("{{\"n\":{i}}}\r\n"));
            if i % 1_000 == 0 {
                text.push('\n');
            }
        }
        text.push_str("{\"last\":true}");
        let (seen, stopped) = read_through_batches(text, RowLimits::default()).await;
        assert!(stopped.is_none(), "{stopped:?}");
        assert_eq!(seen.len(), 30_000 + 30 + 1);
        for (k, (i, _)) in seen.iter().enumerate() {
            assert_eq!(*i, k as u64);
        }
        assert_eq!(seen[0].1, r#"{"n":0}"#);
        assert_eq!(seen[1].1, "", "blank lines keep their place");
        assert_eq!(seen[2].1, r#"{"n":1}"#);
        assert_eq!(seen.last().unwrap().1, r#"{"last":true}"#);
    }

    #[tokio::test]
    async fn lines_before_a_limit_come_first_then_the_limit() {
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("{{\"n\":{i}}}\n"));
        }
        text.push_str(&format!(
            "{{\"long\":\"{}\"}}\n{{\"n\":0}}\n",
            "x".repeat(100)
        ));
        let limits = RowLimits {
            max_row_bytes: 50,
            ..RowLimits::default()
        };
        let (seen, stopped) = read_through_batches(text, limits).await;
        assert_eq!(seen.len(), 20_000, "every line before the long one");
        let Some(PipelineError::Source(f)) = stopped else {
            panic!("{stopped:?}")
        };
        assert_eq!(f.code.as_str(), "RowTooLong");
        assert!(f.message.contains("line 20001"), "{}", f.message);
        assert_eq!(f.class(), ErrorClass::Permanent);

        let limits = RowLimits {
            max_rows_bytes: 1_000,
            ..RowLimits::default()
        };
        let text = "{\"n\":1}\n".repeat(1_000);
        let (seen, stopped) = read_through_batches(text, limits).await;
        assert_eq!(seen.len(), 1_000 / 8, "the lines within the total");
        assert!(
            matches!(&stopped, Some(PipelineError::Source(f)) if f.code.as_str() == "RowsTooLarge"),
            "{stopped:?}"
        );
    }

    #[test]
    fn a_reader_gone_without_an_end_is_an_error_not_the_end() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send(Batch::Lines(LineBatch {
            first: 0,
            text: "{}".to_owned(),
            ends: vec![2],
        }))
        .unwrap();
        drop(tx);
        let mut batches = Batches::new(rx);
        assert!(matches!(batches.next_line(), Ok(Some((0, "{}")))));
        assert!(
            matches!(batches.next_line(), Err(PipelineError::Render(m)) if m.contains("panicked"))
        );
    }
}
