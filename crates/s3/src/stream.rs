//! Streaming an object of unknown size into a store in bounded memory.
//!
//! The renderer writes into a [`PartWriter`] on a blocking thread; every `part_size` bytes
//! become one part, handed over a channel of capacity one to [`upload_parts`] on the async
//! side. A result smaller than one part becomes a single PutObject; a larger one a
//! multipart upload. At most about three parts are in memory at once (one being filled,
//! one in the channel, one uploading), whatever the size of the result. Every request
//! carries `Content-MD5`, which the store verifies; the MD5 of the whole object comes back
//! with the [`Pending`] upload for the delivery record. A body is not hashed a second time
//! for SigV4 (the payload is sent `UNSIGNED-PAYLOAD`): the signature covers the
//! `Content-MD5` header, so a body changed on the way still fails the store's check, and
//! TLS covers the rest on `https` endpoints. Hashing is the async side's work,
//! not the renderer's: a single PutObject's body is hashed once for both. A caller can stop an upload midway (a cancellation token):
//! what was begun comes back to be aborted, never completed.

use std::io::{self, Write};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use courier_core::destination::WriteOptions;
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{S3Failure, failure};

/// The smallest part S3 accepts (but for the last one).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Where the object goes, and its metadata.
#[derive(Debug, Clone)]
pub struct ObjectTarget<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub content_encoding: Option<&'a str>,
    /// The destination's write options, sent on PutObject and CreateMultipartUpload alike.
    pub write: &'a WriteOptions,
}

/// Sets a destination's per-object write options (encryption and KMS key, storage class,
/// tags as `x-amz-tagging`, canned ACL) on a PutObject or CreateMultipartUpload builder,
/// which have the same setters. The expected bucket owner is the client's, on every request
/// ([`crate::client::WithWriteOptions`]).
macro_rules! with_write_options {
    ($builder:expr, $w:expr) => {{
        let w: &courier_core::destination::WriteOptions = $w;
        $builder
            .set_server_side_encryption(
                w.server_side_encryption
                    .map(|e| aws_sdk_s3::types::ServerSideEncryption::from(e.as_str())),
            )
            .set_ssekms_key_id(w.kms_key_id.as_ref().map(|k| k.as_str().to_owned()))
            .set_storage_class(
                w.storage_class
                    .map(|c| aws_sdk_s3::types::StorageClass::from(c.as_str())),
            )
            .set_tagging(w.tags.header())
            .set_acl(
                w.canned_acl
                    .map(|a| aws_sdk_s3::types::ObjectCannedAcl::from(a.as_str())),
            )
    }};
}
pub(crate) use with_write_options;

/// The sync end: a `Write` that cuts the stream into parts.
#[derive(Debug)]
pub struct PartWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    part_size: usize,
    total: u64,
    sent_any: bool,
}

/// What a finished [`PartWriter`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
}

impl PartWriter {
    pub fn new(tx: mpsc::Sender<Bytes>, part_size: usize) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(part_size),
            part_size,
            total: 0,
            sent_any: false,
        }
    }

    fn send(&mut self, part: Vec<u8>) -> io::Result<()> {
        self.sent_any = true;
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends the last part (possibly empty, so that an empty object is still written).
    pub fn finish(mut self) -> io::Result<Written> {
        if !self.buf.is_empty() || !self.sent_any {
            let last = std::mem::take(&mut self.buf);
            self.send(last)?;
        }
        Ok(Written { bytes: self.total })
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.total += data.len() as u64;
        self.buf.extend_from_slice(data);
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            self.buf
                .reserve(self.part_size.saturating_sub(self.buf.len()));
            self.send(part)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An upload whose parts are all sent, waiting to be completed or aborted.
#[derive(Debug)]
pub enum Pending {
    /// Small enough for one PutObject, not sent yet.
    Single { body: Bytes, md5: [u8; 16] },
    /// A multipart upload with its parts uploaded.
    Multipart {
        upload_id: String,
        parts: Vec<CompletedPart>,
        md5: [u8; 16],
    },
}

impl Pending {
    /// A single PutObject of `body`.
    fn single(body: Bytes) -> Self {
        let md5 = Md5::digest(&body).into();
        Pending::Single { body, md5 }
    }

    /// MD5 of the whole object.
    pub fn md5(&self) -> [u8; 16] {
        match self {
            Pending::Single { md5, .. } | Pending::Multipart { md5, .. } => *md5,
        }
    }
}

/// Why [`upload_parts`] did not get every part into the store. Either way the upload
/// begun so far (if any) comes back, to be [`abort`]ed: it must not be completed.
#[derive(Debug)]
pub enum UploadError {
    /// The store refused a request or did not answer.
    Failed(S3Failure, Option<Pending>),
    /// The caller's `stop` token fired (e.g. the delivery lost its object key's lock).
    Stopped(Option<Pending>),
}

impl UploadError {
    /// The failure to report, and the upload to abort.
    pub fn into_failure(self) -> (S3Failure, Option<Pending>) {
        match self {
            UploadError::Failed(failure, pending) => (failure, pending),
            UploadError::Stopped(pending) => (
                S3Failure::new(
                    courier_core::ErrorCode::UploadStopped,
                    "the upload was stopped before it was complete",
                ),
                pending,
            ),
        }
    }
}

/// The next part from the writer (`None` once it is done), unless `stop` fires first.
async fn next_part(
    rx: &mut mpsc::Receiver<Bytes>,
    stop: &CancellationToken,
) -> Result<Option<Bytes>, ()> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(()),
        part = rx.recv() => Ok(part),
    }
}

/// The async end: receives parts until the writer is done. The first part waits to see
/// whether a second comes: if not, the object goes as one PutObject at [`complete`].
///
/// When `stop` fires, it returns [`UploadError::Stopped`] at once, dropping a part upload
/// in flight; only the `CreateMultipartUpload` request is let finish, so that every upload
/// it began can be aborted.
pub async fn upload_parts(
    client: &aws_sdk_s3::Client,
    target: &ObjectTarget<'_>,
    mut rx: mpsc::Receiver<Bytes>,
    stop: &CancellationToken,
) -> Result<Pending, UploadError> {
    let first = match next_part(&mut rx, stop).await {
        Err(()) => return Err(UploadError::Stopped(None)),
        Ok(None) => return Ok(Pending::single(Bytes::new())),
        Ok(Some(part)) => part,
    };
    let second = match next_part(&mut rx, stop).await {
        Err(()) => return Err(UploadError::Stopped(None)),
        Ok(None) => return Ok(Pending::single(first)),
        Ok(Some(part)) => part,
    };
    let create = client
        .create_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .content_type(target.content_type)
        .set_content_encoding(target.content_encoding.map(str::to_owned));
    let created = with_write_options!(create, target.write)
        .send()
        .await
        .map_err(|e| UploadError::Failed(failure(e), None))?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let mut parts = Vec::new();
    let mut whole = Md5::new();
    // An upload that does not end well is only ever aborted: its MD5 does not matter.
    let pending = |parts| {
        Some(Pending::Multipart {
            upload_id: upload_id.clone(),
            parts,
            md5: [0; 16],
        })
    };
    let mut next = Some(first);
    let mut queued = Some(second);
    let mut number = 1;
    while let Some(part) = next.take() {
        if stop.is_cancelled() {
            return Err(UploadError::Stopped(pending(parts)));
        }
        whole.update(&part);
        let send = client
            .upload_part()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(&upload_id)
            .part_number(number)
            .content_md5(content_md5(&part))
            .content_length(part.len() as i64)
            .body(ByteStream::from(part))
            .customize()
            .disable_payload_signing()
            .send();
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(UploadError::Stopped(pending(parts))),
            result = send => result,
        };
        match result {
            Ok(out) => parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            ),
            Err(e) => return Err(UploadError::Failed(failure(e), pending(parts))),
        }
        number += 1;
        next = match queued.take() {
            Some(q) => Some(q),
            None => match next_part(&mut rx, stop).await {
                Ok(p) => p,
                Err(()) => return Err(UploadError::Stopped(pending(parts))),
            },
        };
    }
    Ok(Pending::Multipart {
        upload_id,
        parts,
        md5: whole.finalize().into(),
    })
}

/// Finishes an upload once the writer succeeded; returns the object's ETag.
pub async fn complete(
    client: &aws_sdk_s3::Client,
    target: &ObjectTarget<'_>,
    pending: Pending,
) -> Result<Option<String>, S3Failure> {
    let etag = match pending {
        Pending::Single { body, md5 } => with_write_options!(client.put_object(), target.write)
            .bucket(target.bucket)
            .key(target.key)
            .content_type(target.content_type)
            .set_content_encoding(target.content_encoding.map(str::to_owned))
            .content_md5(B64.encode(md5))
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(failure)?
            .e_tag()
            .map(str::to_owned),
        Pending::Multipart {
            upload_id, parts, ..
        } => client
            .complete_multipart_upload()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(failure)?
            .e_tag()
            .map(str::to_owned),
    };
    Ok(etag.map(|t| t.trim_matches('"').to_owned()))
}

/// Aborts a multipart upload so that no orphaned parts are left in the customer's bucket.
pub async fn abort(client: &aws_sdk_s3::Client, target: &ObjectTarget<'_>, pending: Pending) {
    if let Pending::Multipart { upload_id, .. } = pending {
        let result = client
            .abort_multipart_upload()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(e) = result {
            let f = failure(e);
            tracing::warn!(code = %f.code, "could not abort a failed multipart upload");
        }
    }
}

/// Uploads everything `reader` yields as one object, part by part; for staging a local
/// file of any size. Returns the ETag.
pub async fn upload_reader(
    client: &aws_sdk_s3::Client,
    target: &ObjectTarget<'_>,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    part_size: usize,
) -> Result<Option<String>, S3Failure> {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let read = async move {
        loop {
            let mut part = Vec::with_capacity(part_size);
            while part.len() < part_size {
                let n = (&mut reader)
                    .take((part_size - part.len()) as u64)
                    .read_to_end(&mut part)
                    .await?;
                if n == 0 {
                    break;
                }
            }
            let last = part.len() < part_size;
            if tx.send(Bytes::from(part)).await.is_err() || last {
                return Ok::<(), io::Error>(());
            }
        }
    };
    // Nothing stops a staging upload but a failure.
    let never = CancellationToken::new();
    let (read, upload) = tokio::join!(read, upload_parts(client, target, rx, &never));
    match (read, upload) {
        (Ok(()), Ok(pending)) => complete(client, target, pending).await,
        (_, Err(e)) => {
            let (failure, pending) = e.into_failure();
            if let Some(p) = pending {
                abort(client, target, p).await;
            }
            Err(failure)
        }
        (Err(e), Ok(pending)) => {
            abort(client, target, pending).await;
            Err(S3Failure::new(
                courier_core::ErrorCode::ReadFailed,
                e.to_string(),
            ))
        }
    }
}

/// `Content-MD5`: base64 of the MD5 of `data`.
pub fn content_md5(data: &[u8]) -> String {
    B64.encode(Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_at_the_part_size() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = PartWriter::new(tx, 4);
        w.write_all(b"abcdefghij").unwrap();
        let written = w.finish().unwrap();
        let mut parts = Vec::new();
        while let Ok(p) = rx.try_recv() {
            parts.push(p);
        }
        assert_eq!(parts, [&b"abcd"[..], b"efgh", b"ij"]);
        assert_eq!(written.bytes, 10);
    }

    #[test]
    fn an_empty_object_still_sends_one_empty_part() {
        let (tx, mut rx) = mpsc::channel(4);
        let w = PartWriter::new(tx, 4);
        assert_eq!(w.finish().unwrap().bytes, 0);
        assert_eq!(rx.try_recv().unwrap(), Bytes::new());
    }

    #[test]
    fn a_stopped_upload_fails_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut w = PartWriter::new(tx, 2);
        assert_eq!(
            w.write_all(b"abc").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn a_single_put_carries_the_md5_of_its_body() {
        let pending = Pending::single(Bytes::from_static(b"abcdefghij"));
        assert_eq!(pending.md5(), <[u8; 16]>::from(Md5::digest(b"abcdefghij")));
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e.
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
