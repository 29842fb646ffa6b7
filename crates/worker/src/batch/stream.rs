//! A window's entries into objects. A blocking thread reads the entries page by page
//! (`LRANGE`), places each with [`ObjectCutter`] and gzips its lines into the current
//! object's [`PartWriter`]; the async side uploads each object's parts as they come
//! ([`stream::upload_parts`]: `Content-MD5` on every part) and completes it. At most a page
//! of entries and about three parts per object are in memory, whatever the window's size.
//!
//! The bytes are a pure function of the entries: gzip with a fixed header (no time, no
//! name) at the default level, objects cut at the same entries; so a redone window
//! uploads the same objects.

use std::io::Write;

use courier_core::ErrorCode;
use courier_core::batch::{ObjectCutter, batch_object_key, object_id};
use courier_core::destination::Destination;
use courier_s3::S3Failure;
use courier_s3::stream::{self, ObjectTarget, PartWriter, UploadError, Written};
use courier_store::{BatchStore, StoreError, WindowId};
use flate2::write::GzEncoder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a window's objects did not all land.
#[derive(Debug)]
pub enum WindowError {
    /// The claim was lost (or the worker stops): another worker redoes the window.
    Stopped,
    /// Courier's own storage failed.
    Store(StoreError),
    /// The destination's store failed; classified by its code.
    S3(S3Failure),
    /// Compressing failed on this worker (transient).
    Local(String),
}

impl From<StoreError> for WindowError {
    fn from(e: StoreError) -> Self {
        WindowError::Store(e)
    }
}

/// Where one delivery's rows went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub delivery_id: String,
    pub sequence: u32,
    pub first_line: Option<u64>,
    pub last_line: Option<u64>,
    pub rows: u64,
}

/// One object that landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub sequence: u32,
    pub id: String,
    pub key: String,
    pub bytes: u64,
    /// Lowercase hex MD5 of the object.
    pub md5: String,
    pub etag: Option<String>,
}

/// What the reader hands over when an object is complete.
struct Finished {
    sequence: u32,
    written: Written,
}

/// Streams window `w` of `dest` into its objects with `client`, unless `stop` fires. On
/// success, every object landed; returns them and where each delivery's rows went.
#[allow(clippy::too_many_arguments)]
pub async fn upload_window(
    batches: &BatchStore,
    client: &aws_sdk_s3::Client,
    dest: &Destination,
    w: &WindowId,
    max_object_bytes: u64,
    part_size: usize,
    page: u64,
    stop: &CancellationToken,
) -> Result<(Vec<Landed>, Vec<Placement>), WindowError> {
    let (objects_tx, mut objects_rx) = mpsc::channel::<(u32, mpsc::Receiver<bytes::Bytes>)>(1);
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Finished>();
    let reader = {
        let batches = batches.clone();
        let w = w.clone();
        let stop = stop.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            read_window(
                &handle,
                &batches,
                &w,
                max_object_bytes,
                part_size,
                page,
                &stop,
                &objects_tx,
                &finished_tx,
            )
        })
    };
    let prefix = &dest.spec.s3.path_prefix;
    let mut landed = Vec::new();
    while let Some((sequence, rx)) = objects_rx.recv().await {
        let id = object_id(&dest.id, w.start, sequence);
        let key = batch_object_key(prefix, w.start, &id);
        let target = ObjectTarget {
            bucket: dest.spec.s3.bucket.as_str(),
            key: &key,
            content_type: courier_core::Format::Ndjson.content_type(),
            content_encoding: courier_core::Compression::Gzip.content_encoding(),
            write: &dest.spec.s3.write,
        };
        let pending = match stream::upload_parts(client, &target, rx, stop).await {
            Ok(p) => p,
            Err(e) => {
                let stopped = matches!(e, UploadError::Stopped(_));
                let (failure, pending) = e.into_failure();
                if let Some(p) = pending {
                    stream::abort(client, &target, p).await;
                }
                return Err(if stopped {
                    WindowError::Stopped
                } else {
                    WindowError::S3(failure)
                });
            }
        };
        let Some(done) = finished_rx.recv().await.filter(|f| f.sequence == sequence) else {
            // The reader failed before finishing this object: whatever was sent is not
            // the object; its error comes from the reader below.
            stream::abort(client, &target, pending).await;
            break;
        };
        if stop.is_cancelled() {
            stream::abort(client, &target, pending).await;
            return Err(WindowError::Stopped);
        }
        let md5 = pending.md5();
        let etag = stream::complete(client, &target, pending)
            .await
            .map_err(WindowError::S3)?;
        landed.push(Landed {
            sequence,
            id,
            key,
            bytes: done.written.bytes,
            md5: md5.iter().map(|b| format!("{b:02x}")).collect(),
            etag,
        });
    }
    let placements = reader
        .await
        .map_err(|e| WindowError::Local(format!("the window's reader stopped: {e}")))??;
    let expected = placements
        .iter()
        .map(|p| p.sequence)
        .max()
        .map_or(0, |m| m + 1);
    if landed.len() != expected as usize {
        return Err(WindowError::Local(format!(
            "{} of the window's {expected} objects were uploaded",
            landed.len()
        )));
    }
    Ok((landed, placements))
}

/// The blocking half: entries in, objects' parts out.
#[allow(clippy::too_many_arguments)]
fn read_window(
    handle: &tokio::runtime::Handle,
    batches: &BatchStore,
    w: &WindowId,
    max_object_bytes: u64,
    part_size: usize,
    page: u64,
    stop: &CancellationToken,
    objects: &mpsc::Sender<(u32, mpsc::Receiver<bytes::Bytes>)>,
    finished: &mpsc::UnboundedSender<Finished>,
) -> Result<Vec<Placement>, WindowError> {
    let local = |e: std::io::Error| WindowError::Local(format!("compressing the window: {e}"));
    let mut cutter = ObjectCutter::new(max_object_bytes);
    let mut placements = Vec::new();
    let mut current: Option<(u32, GzEncoder<PartWriter>)> = None;
    let finish = |(sequence, enc): (u32, GzEncoder<PartWriter>)| -> Result<(), WindowError> {
        let written = enc.finish().and_then(PartWriter::finish).map_err(local)?;
        // The uploader may be gone (it failed); its error is the one reported.
        let _ = finished.send(Finished { sequence, written });
        Ok(())
    };
    let mut from = 0;
    loop {
        if stop.is_cancelled() {
            return Err(WindowError::Stopped);
        }
        let entries = handle.block_on(batches.entries(w, from, page))?;
        if entries.is_empty() {
            break;
        }
        from += entries.len() as u64;
        for e in entries {
            let placed = cutter.place(e.lines.len() as u64, e.line_count);
            if placed.starts_new
                && let Some(done) = current.take()
            {
                finish(done)?;
            }
            if current.is_none() {
                let (tx, rx) = mpsc::channel(1);
                if objects.blocking_send((placed.sequence, rx)).is_err() {
                    return Err(WindowError::Stopped);
                }
                current = Some((
                    placed.sequence,
                    GzEncoder::new(
                        PartWriter::new(tx, part_size),
                        flate2::Compression::default(),
                    ),
                ));
            }
            if let Some((_, enc)) = current.as_mut() {
                enc.write_all(&e.lines).map_err(|err| {
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        WindowError::Stopped
                    } else {
                        local(err)
                    }
                })?;
            }
            placements.push(Placement {
                delivery_id: e.delivery_id,
                sequence: placed.sequence,
                first_line: placed.first_line,
                last_line: placed.last_line,
                rows: e.line_count,
            });
        }
    }
    if let Some(done) = current.take() {
        finish(done)?;
    }
    Ok(placements)
}

/// A failure of the window's store as an error code, for records and dead letters.
pub fn error_of(e: &WindowError) -> (ErrorCode, String) {
    match e {
        WindowError::Stopped => (
            ErrorCode::UploadStopped,
            "the window's claim was lost during the upload".into(),
        ),
        WindowError::Store(e) => (ErrorCode::StorageFailed, e.to_string()),
        WindowError::S3(f) => (f.code.clone(), f.message.clone()),
        WindowError::Local(m) => (ErrorCode::LocalIoFailed, m.clone()),
    }
}
