//! Uploads against a real Garage: a body is not hashed for SigV4 (it goes
//! `UNSIGNED-PAYLOAD`), the `Content-MD5` header is what the signature covers, and so a body
//! changed after signing is refused by the store, not stored.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::SdkBody;
use bytes::Bytes;
use courier_core::destination::WriteOptions;
use courier_s3::stream::{MIN_PART_SIZE, ObjectTarget, complete, upload_parts};
use courier_test_support::GarageServer;
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one request carried, as it left.
#[derive(Debug, Clone)]
struct Sent {
    content_sha256: Option<String>,
    content_md5: bool,
    signed_headers: String,
}

/// Records every request's payload hash header and the headers its signature covers.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Sent>>>);

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request().headers();
        let authorization = headers.get("authorization").unwrap_or_default();
        let signed_headers = authorization
            .split(", ")
            .find_map(|part| part.strip_prefix("SignedHeaders="))
            .unwrap_or_default()
            .to_owned();
        self.0.lock().unwrap().push(Sent {
            content_sha256: headers.get("x-amz-content-sha256").map(str::to_owned),
            content_md5: headers.get("content-md5").is_some(),
            signed_headers,
        });
        Ok(())
    }
}

/// Flips the first byte of every request body after it was signed, as a tampering hop
/// between the worker and a plain-HTTP store would.
#[derive(Debug)]
struct Tamper;

impl Intercept for Tamper {
    fn name(&self) -> &'static str {
        "Tamper"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request_mut().body_mut();
        if let Some(bytes) = body.bytes().filter(|b| !b.is_empty()) {
            let mut changed = bytes.to_vec();
            changed[0] ^= 0x01;
            *body = SdkBody::from(changed);
        }
        Ok(())
    }
}

/// Sends `parts` through the upload path the worker uses and completes it; the MD5 of the
/// whole object, as the record would get it.
async fn upload(
    client: &aws_sdk_s3::Client,
    key: &str,
    parts: Vec<Bytes>,
) -> Result<[u8; 16], String> {
    let write = WriteOptions::default();
    let target = ObjectTarget {
        bucket: "uploads",
        key,
        content_type: "text/csv",
        content_encoding: None,
        write: &write,
    };
    let (tx, rx) = mpsc::channel(parts.len().max(1));
    for part in parts {
        tx.send(part).await.unwrap();
    }
    drop(tx);
    let pending = upload_parts(client, &target, rx, &CancellationToken::new())
        .await
        .map_err(|e| e.into_failure().0.to_string())?;
    let md5 = pending.md5();
    complete(client, &target, pending)
        .await
        .map_err(|e| e.to_string())?;
    Ok(md5)
}

#[tokio::test]
async fn bodies_go_unsigned_and_the_signature_covers_their_md5() {
    let garage = GarageServer::start().expect("start garage");
    let key = garage.bucket_with_key("uploads").unwrap();
    let recorder = Recorder::default();
    let config = garage
        .s3_config(&key)
        .to_builder()
        .interceptor(recorder.clone())
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);

    // One PutObject, then a multipart upload of two parts.
    let small = Bytes::from_static(b"a,b\n1,2\n");
    let big: Vec<Bytes> = vec![
        Bytes::from(vec![b'x'; MIN_PART_SIZE]),
        Bytes::from(vec![b'y'; 1000]),
    ];
    let sent_small = upload(&client, "small.csv", vec![small.clone()])
        .await
        .unwrap();
    let sent_big = upload(&client, "big.csv", big.clone()).await.unwrap();

    for (key, body, md5) in [
        ("small.csv", small.to_vec(), sent_small),
        ("big.csv", big.concat(), sent_big),
    ] {
        let got = client
            .get_object()
            .bucket("uploads")
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(bytes.as_ref(), body.as_slice(), "{key}");
        assert_eq!(md5, <[u8; 16]>::from(Md5::digest(&body)), "{key}");
    }

    let sent = recorder.0.lock().unwrap().clone();
    // PutObject, then CreateMultipartUpload, two UploadParts, CompleteMultipartUpload.
    let with_body: Vec<&Sent> = sent.iter().filter(|s| s.content_md5).collect();
    assert_eq!(with_body.len(), 3, "{sent:#?}");
    for s in with_body {
        assert_eq!(
            s.content_sha256.as_deref(),
            Some("UNSIGNED-PAYLOAD"),
            "{s:?}"
        );
        assert!(
            s.signed_headers.split(';').any(|h| h == "content-md5"),
            "{s:?}"
        );
    }
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused_by_the_store() {
    let garage = GarageServer::start().expect("start garage");
    let key = garage.bucket_with_key("uploads").unwrap();
    let config = garage
        .s3_config(&key)
        .to_builder()
        .interceptor(Tamper)
        .build();
    let tampering = aws_sdk_s3::Client::from_conf(config);

    let err = upload(
        &tampering,
        "tampered.csv",
        vec![Bytes::from_static(b"a,b\n1,2\n")],
    )
    .await
    .expect_err("a changed body must not be stored");
    assert!(err.to_lowercase().contains("digest"), "{err}");

    let clean = garage.client(&key).await;
    let head = clean
        .head_object()
        .bucket("uploads")
        .key("tampered.csv")
        .send()
        .await;
    assert!(head.is_err(), "nothing is stored under the key: {head:?}");
}
