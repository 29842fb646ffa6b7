//! Where a delivery's rows come from: inline in the task, or streamed from a reference
//! (`rowsUrl`): an object in the fleet's staging store, or an http(s) URL. References are
//! read as a byte stream, never held whole.

use std::io;

use courier_core::ErrorCode;
use courier_core::delivery::{RowsLocation, RowsUrl};
use courier_s3::S3Failure;
use futures::TryStreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

/// The fleet's staging store, where producers put big results (`COURIER_STAGING_*`).
#[derive(Debug, Clone, Default)]
pub struct Staging {
    pub client: Option<aws_sdk_s3::Client>,
    /// The only bucket `s3://` references may name: the fleet's credentials must not read
    /// whatever else they can on a delivery's say-so.
    pub bucket: Option<String>,
}

/// An open stream of NDJSON bytes (still compressed if the reference says gzip).
pub type ByteSource = Box<dyn AsyncRead + Send + Unpin>;

/// Opens the rows at `url`. Failures are classified like uploads: a missing object or a
/// 4xx is permanent, a connection error or 5xx transient.
pub async fn open(
    url: &RowsUrl,
    staging: &Staging,
    http: &reqwest::Client,
) -> Result<ByteSource, S3Failure> {
    let location = url
        .location()
        .map_err(|m| S3Failure::new(ErrorCode::InvalidRowsUrl, m))?;
    if let Some(staging_bucket) = &staging.bucket
        && let Some(why) = location.outside_staging(staging_bucket)
    {
        return Err(S3Failure::new(ErrorCode::RowsUrlOutsideStaging, why));
    }
    match location {
        RowsLocation::S3 { bucket, key } => {
            let (Some(client), Some(_)) = (&staging.client, &staging.bucket) else {
                return Err(S3Failure::new(
                    ErrorCode::StagingNotConfigured,
                    "this worker has no staging store (COURIER_STAGING_BUCKET …) to read s3:// rows from",
                ));
            };
            let out = client
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| {
                    let mut f = courier_s3::client::failure(e);
                    f.message =
                        format!("reading rows from {url}: {}", f.message, url = url.as_str());
                    f
                })?;
            Ok(Box::new(out.body.into_async_read()))
        }
        RowsLocation::Http(u) => {
            let resp = http.get(&u).send().await.map_err(|e| {
                let code = if e.is_timeout() {
                    ErrorCode::Timeout
                } else {
                    ErrorCode::ConnectionFailed
                };
                S3Failure::new(code, format!("reading rows: {e}"))
            })?;
            let status = resp.status();
            if !status.is_success() {
                // Its class follows the status: a 5xx or 429 (or 408) is worth another try.
                return Err(S3Failure {
                    status: Some(status.as_u16()),
                    ..S3Failure::new(
                        ErrorCode::RowsUnavailable,
                        format!("reading rows: the server answered {status}"),
                    )
                });
            }
            let stream = resp.bytes_stream().map_err(io::Error::other);
            Ok(Box::new(StreamReader::new(stream)))
        }
    }
}

#[cfg(test)]
mod tests {
    use courier_core::destination::Credentials;
    use courier_core::failure::ErrorClass;

    use super::*;

    async fn staging(bucket: Option<&str>) -> Staging {
        let client = courier_s3::client::client_for(
            "us-east-1",
            Some("http://127.0.0.1:9"),
            &Credentials::Anonymous,
            courier_s3::S3Timeouts::default(),
        )
        .await;
        Staging {
            client: Some(client),
            bucket: bucket.map(str::to_owned),
        }
    }

    async fn code(url: &str, staging: &Staging) -> String {
        let url = RowsUrl::parse(url).unwrap();
        match open(&url, staging, &reqwest::Client::new()).await {
            Ok(_) => "opened".into(),
            Err(f) => {
                assert_eq!(f.class(), ErrorClass::Permanent, "{f:?}");
                f.code.to_string()
            }
        }
    }

    #[tokio::test]
    async fn s3_references_must_name_the_staging_bucket() {
        let staging = staging(Some("courier-staging")).await;
        assert_eq!(
            code("s3://customer-secrets/dump.ndjson", &staging).await,
            "RowsUrlOutsideStaging"
        );
        assert_eq!(
            code("s3://courier-staging/x.ndjson", &Staging::default()).await,
            "StagingNotConfigured"
        );
        assert_eq!(
            code("s3://courier-staging/x.ndjson", &self::staging(None).await).await,
            "StagingNotConfigured"
        );
    }
}
