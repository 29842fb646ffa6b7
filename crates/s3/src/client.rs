//! Talking to the customer's store: building a client for a destination, uploading a
//! file, and turning SDK errors into an [`ErrorCode`], a message and the HTTP status.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RequestChecksumCalculation, RuntimeComponents,
    retry::RetryConfig,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use courier_core::ErrorCode;
use courier_core::destination::{
    Credentials as DestinationCredentials, RoleCredentials, S3Settings, WriteOptions,
};
use courier_core::failure::ErrorClass;
use courier_egress::{EgressPolicy, EgressRefused, find_refusal};
use tokio::sync::OnceCell;

/// Timeouts for one request to a customer's store.
#[derive(Debug, Clone, Copy)]
pub struct S3Timeouts {
    /// To open the connection; an endpoint that does not answer fails after this.
    pub connect: Duration,
    /// For one whole request, upload included.
    pub operation: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            operation: Duration::from_secs(300),
        }
    }
}

/// The AWS default credential chain (environment, profile, web identity, instance role),
/// built once per process and shared by every destination that asks for it.
async fn default_chain() -> SharedCredentialsProvider {
    static CHAIN: OnceCell<SharedCredentialsProvider> = OnceCell::const_new();
    CHAIN
        .get_or_init(|| async {
            SharedCredentialsProvider::new(
                aws_config::default_provider::credentials::default_provider().await,
            )
        })
        .await
        .clone()
}

/// The region STS is called in when the fleet's configuration names none.
const STS_FALLBACK_REGION: &str = "us-east-1";

/// The fleet's own AWS configuration, loaded once per process: its base identity (the
/// default chain), its region, and its endpoints (`AWS_ENDPOINT_URL_STS`). Roles are assumed
/// with it. The STS endpoint is the operator's configuration, never a tenant's input (a
/// tenant names only the role's ARN, which goes in the request body), so STS calls use the
/// SDK's own HTTP client rather than the egress-checked one: an operator may well reach STS
/// through a VPC endpoint on a private address that tenant traffic must not reach.
pub async fn fleet_config() -> SdkConfig {
    static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();
    CONFIG
        .get_or_init(|| async {
            let conf = aws_config::defaults(BehaviorVersion::latest()).load().await;
            if conf.region().is_some() {
                conf
            } else {
                conf.into_builder()
                    .region(Region::new(STS_FALLBACK_REGION))
                    .build()
            }
        })
        .await
        .clone()
}

/// The credentials of `role`, assumed by the fleet's identity with the tenant's
/// ExternalId under `session`. The provider calls STS whenever the client's identity
/// cache asks; the cache (one per client, so one per destination in the worker's
/// [`crate::ClientCache`]) keeps the temporary credentials until shortly before they
/// expire, so deliveries do not assume the role each time.
pub async fn role_provider(role: &RoleCredentials, session: &str) -> SharedCredentialsProvider {
    let provider = AssumeRoleProvider::builder(role.role_arn.as_str())
        .configure(&fleet_config().await)
        .external_id(role.external_id.as_str())
        .session_name(session)
        .build()
        .await;
    SharedCredentialsProvider::new(provider)
}

/// A client for one destination, whose every connection goes only where `egress` allows
/// (checked at connect time, on the addresses connected to). Retries are off: Courier owns
/// its retry policy. `session` is the role session name for `ROLE` credentials
/// ([`courier_core::role::role_session_name`]). Fails only for an endpoint written as an
/// address the policy refuses.
pub async fn client(
    s3: &S3Settings,
    timeouts: S3Timeouts,
    egress: &Arc<EgressPolicy>,
    session: &str,
) -> Result<aws_sdk_s3::Client, S3Failure> {
    check_endpoint(s3, egress)?;
    Ok(client_for(
        s3.region.as_str(),
        s3.endpoint_url.as_ref().map(|e| e.as_str()),
        &s3.credentials,
        timeouts,
        Some(egress),
        session,
    )
    .await
    .with_write_options(&s3.write))
}

/// Refuses an endpoint written as an address the egress policy refuses.
pub fn check_endpoint(s3: &S3Settings, egress: &Arc<EgressPolicy>) -> Result<(), S3Failure> {
    if let Some(endpoint) = &s3.endpoint_url
        && let Ok(url) = url::Url::parse(endpoint.as_str())
    {
        egress.check_literal(&url).map_err(refused)?;
    }
    Ok(())
}

/// The failure a refused connection is reported as: its own code, naming the host.
pub fn refused(r: EgressRefused) -> S3Failure {
    tracing::warn!(host = %r.host, addr = %r.addr, purpose = r.purpose, "egress refused");
    S3Failure {
        code: ErrorCode::EgressRefused,
        message: r.to_string(),
        status: None,
    }
}

/// Adds what a destination's write options ask of every request to a client.
pub trait WithWriteOptions {
    /// The client, sending `x-amz-expected-bucket-owner` on every request when `write`
    /// names the owner. (The per-object options go on the upload calls.)
    fn with_write_options(self, write: &WriteOptions) -> Self;
}

impl WithWriteOptions for aws_sdk_s3::Client {
    fn with_write_options(self, write: &WriteOptions) -> Self {
        let Some(owner) = &write.expected_bucket_owner else {
            return self;
        };
        let conf = self
            .config()
            .to_builder()
            .interceptor(ExpectedBucketOwner(owner.as_str().to_owned()))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// Sets `x-amz-expected-bucket-owner` on every request of a client before it is signed:
/// HeadBucket, PutObject, multipart create/part/complete/abort and DeleteObject alike, so
/// none can be forgotten. S3 answers 403 when the bucket belongs to another account.
#[derive(Debug)]
struct ExpectedBucketOwner(String);

impl Intercept for ExpectedBucketOwner {
    fn name(&self) -> &'static str {
        "ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-expected-bucket-owner", self.0.clone());
        Ok(())
    }
}

/// A client for any store: a destination (with its tenant's `egress` policy) or the
/// fleet's own staging store (`None`: the operator's store, reached as configured).
pub async fn client_for(
    region: &str,
    endpoint: Option<&str>,
    credentials: &DestinationCredentials,
    timeouts: S3Timeouts,
    egress: Option<&Arc<EgressPolicy>>,
    session: &str,
) -> aws_sdk_s3::Client {
    let mut b = config_builder(region, endpoint, timeouts, egress);
    match credentials {
        DestinationCredentials::Static(c) => {
            b = b.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_owned(),
                None,
                None,
                "courier-destination",
            ));
        }
        DestinationCredentials::Anonymous => {
            // Unsigned requests, for buckets that allow public writes.
            b = b.allow_no_auth();
        }
        DestinationCredentials::DefaultChain => {
            b = b.credentials_provider(default_chain().await);
        }
        DestinationCredentials::Role(role) => {
            b = b.credentials_provider(role_provider(role, session).await);
        }
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// A client for a destination signing with credentials already obtained (the connection
/// test's assumed role), with the destination's write options.
pub fn client_with_credentials(
    s3: &S3Settings,
    credentials: Credentials,
    timeouts: S3Timeouts,
    egress: &Arc<EgressPolicy>,
) -> aws_sdk_s3::Client {
    let b = config_builder(
        s3.region.as_str(),
        s3.endpoint_url.as_ref().map(|e| e.as_str()),
        timeouts,
        Some(egress),
    )
    .credentials_provider(credentials);
    aws_sdk_s3::Client::from_conf(b.build()).with_write_options(&s3.write)
}

/// Everything of a client but its credentials.
fn config_builder(
    region: &str,
    endpoint: Option<&str>,
    timeouts: S3Timeouts,
    egress: Option<&Arc<EgressPolicy>>,
) -> aws_sdk_s3::config::Builder {
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_timeout(timeouts.operation)
                .build(),
        )
        // Many S3-compatible stores reject the SDK's default streaming checksums;
        // send them only where the operation requires one.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if let Some(endpoint) = endpoint {
        // S3-compatible stores rarely serve virtual-hosted buckets on custom hosts.
        b = b.endpoint_url(endpoint).force_path_style(true);
    }
    if let Some(policy) = egress {
        let port = endpoint
            .and_then(|e| url::Url::parse(e).ok())
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(443);
        b = b.http_client(courier_egress::aws_http_client(policy.clone(), port));
    }
    b
}

/// The object's metadata.
#[derive(Debug, Clone)]
pub struct PutRequest<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub content_encoding: Option<&'a str>,
    pub content_length: u64,
}

/// A failed request (to a store, or to a row source), as a customer and the retry policy
/// need to see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct S3Failure {
    /// The store's error code, or Courier's name for a failure without one
    /// (`Timeout`, `ConnectionFailed`, …).
    pub code: ErrorCode,
    pub message: String,
    /// The HTTP status of the answer; `None` when there was none.
    pub status: Option<u16>,
}

impl S3Failure {
    /// A failure without an HTTP answer.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
        }
    }

    /// Whether a later try may pass: the code's class, or the status's when the code has
    /// none of its own.
    pub fn class(&self) -> ErrorClass {
        self.code.class(self.status)
    }

    /// The failure of a request that named `write`'s expected bucket owner, with that said
    /// in its message when the store answered `AccessDenied`: S3 refuses a bucket of another
    /// account with exactly that code and a plain "Access Denied", so the record says which
    /// owner the request expected (the code stays the store's: a policy denies alike).
    pub fn naming_expected_owner(mut self, write: &WriteOptions) -> Self {
        if let (ErrorCode::AccessDenied, Some(owner)) = (&self.code, &write.expected_bucket_owner) {
            self.message = format!(
                "{} (the request named the expected bucket owner {owner}: S3 answers \
                 AccessDenied when the bucket belongs to another account)",
                self.message
            );
        }
        self
    }
}

/// Uploads the file at `path` with one PutObject; returns the ETag.
pub async fn put_file(
    client: &aws_sdk_s3::Client,
    req: &PutRequest<'_>,
    path: &Path,
) -> Result<Option<String>, S3Failure> {
    let body = ByteStream::from_path(path).await.map_err(|e| {
        S3Failure::new(
            ErrorCode::SpoolReadFailed,
            format!("could not read the rendered file: {e}"),
        )
    })?;
    let out = client
        .put_object()
        .bucket(req.bucket)
        .key(req.key)
        .content_type(req.content_type)
        .set_content_encoding(req.content_encoding.map(str::to_owned))
        .content_length(req.content_length as i64)
        .body(body)
        .send()
        .await
        .map_err(failure)?;
    Ok(out.e_tag().map(|t| t.trim_matches('"').to_owned()))
}

/// Maps any SDK error to an [`S3Failure`].
pub fn failure<E, R>(err: SdkError<E, R>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    failure_of(&err)
}

/// [`failure`] of a borrowed error.
pub fn failure_of<E, R>(err: &SdkError<E, R>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    if let Some(f) = role_failure(err) {
        return f;
    }
    let (status, code, message) = match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().http_status();
            let e = se.err();
            let code = e
                .code()
                .map_or_else(|| ErrorCode::of_status(status), ErrorCode::from);
            let message = e.message().map_or_else(|| code.to_string(), str::to_owned);
            (Some(status), code, message)
        }
        SdkError::TimeoutError(_) => (
            None,
            ErrorCode::Timeout,
            "the store did not answer in time".to_owned(),
        ),
        SdkError::DispatchFailure(df)
            if let Some(r) = df.as_connector_error().and_then(|c| find_refusal(c)) =>
        {
            return refused(r.clone());
        }
        SdkError::DispatchFailure(df) => {
            let code = if df.is_timeout() {
                ErrorCode::Timeout
            } else if df.is_io() {
                ErrorCode::ConnectionFailed
            } else {
                ErrorCode::DispatchFailure
            };
            let detail = df
                .as_connector_error()
                .map(|c| error_chain(c))
                .unwrap_or_else(|| "the request could not be sent".into());
            (None, code, detail)
        }
        SdkError::ResponseError(re) => {
            let status = re.raw().http_status();
            (
                Some(status),
                ErrorCode::InvalidResponse,
                "the store sent a response that could not be read".to_owned(),
            )
        }
        SdkError::ConstructionFailure(_) => {
            (None, ErrorCode::RequestConstructionFailed, error_chain(err))
        }
        _ => (None, ErrorCode::Unknown, error_chain(err)),
    };
    S3Failure {
        code,
        message,
        status,
    }
}

/// A request that failed because the destination's role could not be assumed:
/// [`ErrorCode::AssumeRoleFailed`] with STS's status (a 403 is permanent, a 5xx or no answer
/// transient) and STS's code and message.
fn role_failure(err: &(dyn std::error::Error + 'static)) -> Option<S3Failure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<CredentialsError>().is_some() {
            let mut inner = e.source();
            while let Some(i) = inner {
                if let Some(sts) = i.downcast_ref::<SdkError<AssumeRoleError, StsResponse>>() {
                    let f = failure_of(sts);
                    return Some(S3Failure {
                        code: ErrorCode::AssumeRoleFailed,
                        message: format!("could not assume the role: {}: {}", f.code, f.message),
                        status: f.status,
                    });
                }
                inner = i.source();
            }
            return Some(S3Failure::new(
                ErrorCode::AssumeRoleFailed,
                format!("could not assume the role: {}", error_chain(e)),
            ));
        }
        cur = e.source();
    }
    None
}

type StsResponse = aws_sdk_sts::config::http::HttpResponse;

/// Lets [`failure`] read the status of any raw response type.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use courier_core::write_options::AccountId;

    use super::*;

    #[test]
    fn access_denied_names_the_expected_owner_only_when_one_was_sent() {
        let denied = || S3Failure {
            code: ErrorCode::AccessDenied,
            message: "Access Denied".into(),
            status: Some(403),
        };
        let owner = WriteOptions {
            expected_bucket_owner: Some(AccountId::parse("210987654321").unwrap()),
            ..WriteOptions::default()
        };
        let f = denied().naming_expected_owner(&owner);
        assert_eq!(f.code, ErrorCode::AccessDenied);
        assert!(
            f.message.starts_with(
                "Access Denied (the request named the expected bucket owner 210987654321"
            ),
            "{}",
            f.message
        );
        assert_eq!(
            denied().naming_expected_owner(&WriteOptions::default()),
            denied()
        );
        let slow = S3Failure::new(ErrorCode::SlowDown, "slow");
        assert_eq!(slow.clone().naming_expected_owner(&owner), slow);
    }
}
