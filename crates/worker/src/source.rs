//! Where a delivery's rows come from: inline in the task, or streamed from a reference
//! (`rowsUrl`): an object in the fleet's staging store, or an http(s) URL. References are
//! read as a byte stream, never held whole.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use courier_core::delivery::{RowsLocation, RowsUrl};
use courier_core::{ErrorCode, TenantId};
use courier_egress::EgressPolicy;
use courier_s3::S3Failure;
use futures::TryStreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

/// The fleet's staging store, where producers put big results (`COURIER_STAGING_*`).
#[derive(Debug, Clone, Default)]
pub struct Staging {
    pub client: Option<aws_sdk_s3::Client>,
    /// The only bucket `s3://` references may name, and only under the delivery's own
    /// `{tenant}/`: the fleet's credentials must not read whatever else they can, nor one
    /// tenant's staged rows for another, on a delivery's say-so.
    pub bucket: Option<String>,
}

/// How `http(s)://` rows are fetched: every connection checked against the tenant egress
/// policy at connect time, redirects not followed (a redirect could lead anywhere the
/// worker can reach; a reference must name the rows themselves), no proxy.
#[derive(Debug, Clone)]
pub struct HttpRows {
    pub egress: Arc<EgressPolicy>,
    pub connect_timeout: Duration,
    /// Longest pause between two reads.
    pub read_timeout: Duration,
}

impl HttpRows {
    /// A client for `url`'s host and port (allow-list entries can name one port).
    fn client_for(&self, url: &url::Url) -> Result<reqwest::Client, S3Failure> {
        self.egress
            .check_literal(url)
            .map_err(courier_s3::client::refused)?;
        let port = url.port_or_known_default().unwrap_or(443);
        courier_egress::reqwest_builder(self.egress.clone(), port)
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .build()
            .map_err(|e| S3Failure::new(ErrorCode::ConnectionFailed, format!("reading rows: {e}")))
    }
}

/// An open stream of NDJSON bytes (still compressed if the reference says gzip).
pub type ByteSource = Box<dyn AsyncRead + Send + Unpin>;

/// Opens the rows at `url` for a delivery that concerns `tenants` (its own tenant and its
/// destination's owner: the same two, unless the task was written by someone other than
/// the producer); `s3://` rows must lie under each one's `{tenant}/`, the rule the API
/// applied ([`RowsLocation::refusal_for`]), checked again here. Failures are classified
/// like uploads: a refused reference, a missing object or a 4xx is permanent, a
/// connection error or 5xx transient.
pub async fn open(
    url: &RowsUrl,
    tenants: &[&TenantId],
    staging: &Staging,
    http: &HttpRows,
) -> Result<ByteSource, S3Failure> {
    let location = url
        .location()
        .map_err(|m| S3Failure::new(ErrorCode::InvalidRowsUrl, m))?;
    if let Some(staging_bucket) = &staging.bucket
        && let Some(refusal) = tenants
            .iter()
            .find_map(|tenant| location.refusal_for(staging_bucket, tenant))
    {
        return Err(S3Failure::new(refusal.code, refusal.message));
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
            let parsed = url::Url::parse(&u)
                .map_err(|e| S3Failure::new(ErrorCode::InvalidRowsUrl, format!("rowsUrl: {e}")))?;
            let client = http.client_for(&parsed)?;
            let resp = client.get(parsed).send().await.map_err(|e| {
                if let Some(r) = courier_egress::find_refusal(&e) {
                    return courier_s3::client::refused(r.clone());
                }
                // The URL may carry a signed token in its query: never repeat it.
                let e = e.without_url();
                let code = if e.is_timeout() {
                    ErrorCode::Timeout
                } else {
                    ErrorCode::ConnectionFailed
                };
                S3Failure::new(code, format!("reading rows: {e}"))
            })?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(S3Failure {
                    status: Some(status.as_u16()),
                    ..S3Failure::new(
                        ErrorCode::RowsUnavailable,
                        format!(
                            "reading rows: the server answered {status}; redirects are not \
                             followed, so rowsUrl must name the rows themselves"
                        ),
                    )
                });
            }
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

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    async fn staging(bucket: Option<&str>) -> Staging {
        let client = courier_s3::client::client_for(
            "us-east-1",
            Some("http://127.0.0.1:9"),
            &Credentials::Anonymous,
            courier_s3::S3Timeouts::default(),
            None,
            "courier-staging",
        )
        .await;
        Staging {
            client: Some(client),
            bucket: bucket.map(str::to_owned),
        }
    }

    fn http(policy: EgressPolicy) -> HttpRows {
        HttpRows {
            egress: Arc::new(policy),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
        }
    }

    /// A one-trick HTTP server on 127.0.0.1: answers every request with `response`, and
    /// counts the connections it accepted.
    async fn server(response: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
            }
        });
        (port, hits)
    }

    async fn fail(url: &str, http: &HttpRows) -> S3Failure {
        let url = RowsUrl::parse(url).unwrap();
        match open(&url, &[&acme()], &Staging::default(), http).await {
            Ok(_) => panic!("{url:?} opened"),
            Err(f) => f,
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use std::sync::atomic::Ordering;
        let (target, target_hits) =
            server("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}").await;
        let redirect: &'static str = Box::leak(
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/internal\r\n\
                 content-length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (redirector, redirector_hits) = server(redirect).await;
        // The operator allows both ports, so only the redirect rule stands in the way.
        let both = EgressPolicy::from_settings(
            &format!("127.0.0.1:{redirector},127.0.0.1:{target}"),
            false,
        )
        .unwrap();
        let f = fail(
            &format!("http://127.0.0.1:{redirector}/rows.ndjson"),
            &http(both),
        )
        .await;
        assert_eq!(f.code.as_str(), "RowsUnavailable");
        assert_eq!(f.status, Some(302));
        assert!(
            f.message.contains("redirects are not followed"),
            "{}",
            f.message
        );
        assert_eq!(f.class(), ErrorClass::Permanent);
        assert_eq!(redirector_hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            target_hits.load(Ordering::SeqCst),
            0,
            "the target saw no request"
        );
    }

    #[tokio::test]
    async fn refused_hosts_get_no_connection_and_tokens_never_reach_a_message() {
        use std::sync::atomic::Ordering;
        let (port, hits) =
            server("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n").await;
        let strict = http(EgressPolicy::public_only());
        for url in [
            format!("http://127.0.0.1:{port}/rows.ndjson?token=SECRET-TOKEN"),
            format!("http://localhost:{port}/rows.ndjson?token=SECRET-TOKEN"),
        ] {
            let f = fail(&url, &strict).await;
            assert_eq!(f.code.as_str(), "EgressRefused", "{url}");
            assert!(
                f.message.contains("special-purpose address (loopback)"),
                "{}",
                f.message
            );
            assert!(!f.message.contains("SECRET-TOKEN"), "{}", f.message);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");

        let allowed = http(
            EgressPolicy::from_settings(&format!("127.0.0.1:{port},[::1]:{port}"), false).unwrap(),
        );
        let f = fail(
            &format!("http://localhost:{port}/r.ndjson?token=SECRET-TOKEN"),
            &allowed,
        )
        .await;
        assert_eq!(f.code.as_str(), "RowsUnavailable");
        assert_eq!(
            f.class(),
            ErrorClass::Transient,
            "a 500 is worth another try"
        );
        assert!(!f.message.contains("SECRET-TOKEN"), "{}", f.message);

        // A connection error names no URL either.
        let closed = courier_test_support::free_port();
        let allowed =
            http(EgressPolicy::from_settings(&format!("127.0.0.1:{closed}"), false).unwrap());
        let f = fail(
            &format!("http://127.0.0.1:{closed}/r.ndjson?token=SECRET-TOKEN"),
            &allowed,
        )
        .await;
        assert_eq!(f.code.as_str(), "ConnectionFailed");
        assert!(!f.message.contains("SECRET-TOKEN"), "{}", f.message);
    }

    async fn code(url: &str, staging: &Staging) -> String {
        let url = RowsUrl::parse(url).unwrap();
        match open(
            &url,
            &[&acme()],
            staging,
            &http(EgressPolicy::public_only()),
        )
        .await
        {
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
            code("s3://customer-secrets/acme/dump.ndjson", &staging).await,
            "RowsUrlOutsideStaging"
        );
        assert_eq!(
            code("s3://courier-staging/acme/x.ndjson", &Staging::default()).await,
            "StagingNotConfigured"
        );
        assert_eq!(
            code(
                "s3://courier-staging/acme/x.ndjson",
                &self::staging(None).await
            )
            .await,
            "StagingNotConfigured"
        );
    }

    #[tokio::test]
    async fn s3_references_must_lie_under_the_deliverys_tenant() {
        let staging = staging(Some("courier-staging")).await;
        for other in [
            "s3://courier-staging/globex/x.ndjson",
            "s3://courier-staging/acme2/x.ndjson",
            "s3://courier-staging/acme/../globex/x.ndjson",
            "s3://courier-staging/acme/%2e%2e/globex/x.ndjson",
            "s3://courier-staging/x.ndjson",
        ] {
            assert_eq!(code(other, &staging).await, "RowsOutsideTenant", "{other}");
        }
        // A task whose tenant and destination owner differ reads neither one's rows.
        let url = RowsUrl::parse("s3://courier-staging/acme/x.ndjson").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let f = match open(
            &url,
            &[&acme(), &globex],
            &staging,
            &http(EgressPolicy::public_only()),
        )
        .await
        {
            Ok(_) => panic!("opened"),
            Err(f) => f,
        };
        assert_eq!(f.code.as_str(), "RowsOutsideTenant");
        assert!(f.message.contains("under `globex/`"), "{}", f.message);
    }
}
