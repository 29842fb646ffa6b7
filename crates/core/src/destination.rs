//! A customer's delivery destination: which bucket, where in it, in what format.
//!
//! The wire shape follows the Mapping.Travel API (`type`, `name`, `s3.{bucket, region,
//! accessKeyId, secretAccessKey, endpointUrl, pathPrefix}`, `status`) plus `format` and
//! `compression`. [`DestinationRequest::validate`] turns a request into a
//! [`DestinationSpec`] made only of validated newtypes, so nothing invalid reaches a worker.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::format::{ColumnTypes, ParquetCompression, ParquetOptions};
use crate::{Compression, Format, ValidationErrors};

/// A bucket name S3 accepts (general purpose bucket naming rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let fail = |why: &str| Err(format!("bucket `{s}` is not a valid S3 bucket name: {why}"));
        if s.len() < 3 || s.len() > 63 {
            return fail("it must be 3 to 63 characters long");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return fail("only lowercase letters, digits, `.` and `-` are allowed");
        }
        let first = s.as_bytes()[0];
        let last = s.as_bytes()[s.len() - 1];
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return fail("it must begin and end with a letter or digit");
        }
        if s.contains("..") {
            return fail("it must not contain two adjacent periods");
        }
        if s.parse::<std::net::Ipv4Addr>().is_ok() {
            return fail("it must not be formatted as an IP address");
        }
        for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
            if s.starts_with(p) {
                return fail(&format!("it must not start with `{p}`"));
            }
        }
        for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
            if s.ends_with(suffix) {
                return fail(&format!("it must not end with `{suffix}`"));
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key prefix every delivered file gets: empty, or a folder path ending with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        if !s.ends_with('/') {
            return Err(format!(
                "pathPrefix `{s}` must end with `/`; without it files land at keys like \
                 `{s}mapping_results_…` instead of inside the `{s}/` folder (use `{s}/`)"
            ));
        }
        if s.starts_with('/') {
            return Err(
                "pathPrefix must not start with `/` (S3 keys have no leading slash)".into(),
            );
        }
        if s.len() > 512 {
            return Err("pathPrefix must be at most 512 bytes".into());
        }
        if s.chars().any(|c| c.is_control()) {
            return Err("pathPrefix must not contain control characters".into());
        }
        if s[..s.len() - 1]
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(
                "pathPrefix must not contain empty, `.` or `..` segments (e.g. `a//b/`)".into(),
            );
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An AWS region name such as `eu-west-1`, `auto` for R2, or a store's own (`garage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "region `{s}` must be a region name such as `eu-west-1` (lowercase letters, \
                 digits and `-`), or `auto` for Cloudflare R2"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The http(s) endpoint of an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let url =
            url::Url::parse(s).map_err(|e| format!("endpointUrl `{s}` is not a valid URL: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "endpointUrl must use http or https, not `{}`",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("endpointUrl must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "endpointUrl must not carry credentials; use accessKeyId and secretAccessKey"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("endpointUrl must not have a query or fragment".into());
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host, without brackets for IPv6.
    pub fn host(&self) -> String {
        let url = url::Url::parse(&self.0).expect("validated at parse");
        match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    pub fn port_or_default(&self) -> u16 {
        let url = url::Url::parse(&self.0).expect("validated at parse");
        url.port_or_known_default().unwrap_or(443)
    }
}

/// True for addresses an endpoint must not point at unless private endpoints are allowed:
/// loopback, private ranges, link-local (cloud metadata services live there), unspecified.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private_address(IpAddr::V4(v4)))
        }
    }
}

/// A secret that never prints: `Debug` and `Display` show `***`, and it has no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The only way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Shows an access key id as `AKIA…MPLE`: enough to recognise it, not enough to use it.
pub fn mask_access_key_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Whether deliveries flow to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DestinationStatus {
    #[default]
    Active,
    /// Deliveries are accepted and held until the destination is active again.
    Paused,
}

/// The destination type; only S3 (and S3-compatible stores) for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DestinationType {
    S3,
}

/// The `s3` object of a destination request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Request {
    #[schema(example = "acme-mapping-results")]
    pub bucket: String,
    /// `STATIC`, `NONE` or `DEFAULT_CHAIN`; see [`CredentialsMode`].
    #[serde(default)]
    pub credentials: Option<CredentialsMode>,
    #[schema(example = "eu-west-1")]
    pub region: String,
    #[serde(default)]
    #[schema(example = "AKIAIOSFODNN7EXAMPLE")]
    pub access_key_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only, format = Password)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    #[schema(example = "https://s3.eu-west-1.amazonaws.com")]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    #[schema(example = "incoming/")]
    pub path_prefix: Option<String>,
}

/// The body of `POST /api/v1/delivery-destinations`, as received.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRequest {
    #[serde(rename = "type")]
    pub kind: DestinationType,
    pub name: String,
    pub s3: S3Request,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub compression: Compression,
    /// Only with `format: PARQUET`: the codec inside the file and declared column types.
    #[serde(default)]
    pub parquet: Option<ParquetRequest>,
    #[serde(default)]
    pub status: DestinationStatus,
}

/// The `parquet` object of a destination request.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParquetRequest {
    /// The codec of the file's pages: `ZSTD` (default), `SNAPPY`, `GZIP` or `NONE`.
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Column name → `STRING`, `INT64`, `DOUBLE`, `BOOLEAN`, `TIMESTAMP`, `DATE` or `JSON`;
    /// undeclared columns are inferred. A delivery's `columnTypes` win over these.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, crate::format::ColumnType>>)]
    pub column_types: Option<ColumnTypes>,
}

/// An access key pair saved with the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// How requests to a destination are signed, as named in the API (`s3.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CredentialsMode {
    /// `accessKeyId` and `secretAccessKey` saved with the destination.
    Static,
    /// Unsigned requests, for buckets that allow anonymous writes.
    None,
    /// The AWS default credential chain of the worker (environment, profile, web
    /// identity, instance role), for operators who run Courier inside AWS.
    DefaultChain,
}

/// How requests to a destination are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Static(StaticCredentials),
    Anonymous,
    DefaultChain,
}

impl Credentials {
    pub fn mode(&self) -> CredentialsMode {
        match self {
            Credentials::Static(_) => CredentialsMode::Static,
            Credentials::Anonymous => CredentialsMode::None,
            Credentials::DefaultChain => CredentialsMode::DefaultChain,
        }
    }

    pub fn as_static(&self) -> Option<&StaticCredentials> {
        match self {
            Credentials::Static(c) => Some(c),
            _ => None,
        }
    }
}

/// Checks the credential fields: `credentials` defaults to `STATIC` when keys are given and
/// `NONE` when they are not; keys come in pairs, and only with `STATIC`.
fn validate_credentials(
    mode: Option<CredentialsMode>,
    access_key_id: Option<String>,
    secret: Option<Secret>,
    errors: &mut ValidationErrors,
) -> Option<Credentials> {
    let has_keys = access_key_id.is_some() || secret.is_some();
    let mode = mode.unwrap_or(if has_keys {
        CredentialsMode::Static
    } else {
        CredentialsMode::None
    });
    match mode {
        CredentialsMode::Static => match (access_key_id, secret) {
            (Some(id), Some(secret)) => {
                let mut ok = true;
                if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                    errors.push("s3.accessKeyId", "must be 1 to 128 printable characters");
                    ok = false;
                }
                if secret.expose().is_empty() || secret.expose().len() > 256 {
                    errors.push("s3.secretAccessKey", "must be 1 to 256 characters");
                    ok = false;
                }
                ok.then_some(Credentials::Static(StaticCredentials {
                    access_key_id: id,
                    secret_access_key: secret,
                }))
            }
            (id, _) => {
                let field = if id.is_some() {
                    "s3.secretAccessKey"
                } else {
                    "s3.accessKeyId"
                };
                errors.push(
                    field,
                    "is required: STATIC credentials need both accessKeyId and secretAccessKey",
                );
                None
            }
        },
        other => {
            if has_keys {
                let field = if access_key_id.is_some() {
                    "s3.accessKeyId"
                } else {
                    "s3.secretAccessKey"
                };
                errors.push(
                    field,
                    format!(
                        "must not be given with credentials {}; keys are only used with STATIC",
                        if other == CredentialsMode::None {
                            "NONE"
                        } else {
                            "DEFAULT_CHAIN"
                        }
                    ),
                );
                return None;
            }
            Some(if other == CredentialsMode::None {
                Credentials::Anonymous
            } else {
                Credentials::DefaultChain
            })
        }
    }
}

/// Where and how to write in S3, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: BucketName,
    pub region: Region,
    pub endpoint_url: Option<EndpointUrl>,
    pub path_prefix: PathPrefix,
    pub credentials: Credentials,
}

/// A destination configuration with every field validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    pub s3: S3Settings,
    pub format: Format,
    pub compression: Compression,
    /// Used only with [`Format::Parquet`]; the defaults otherwise.
    pub parquet: ParquetOptions,
    pub status: DestinationStatus,
}

/// Checks the Parquet settings against the format: `compression` (gzip around the whole
/// file) is refused for Parquet, which compresses inside the file, and `parquet` is
/// refused for the other formats, so no setting silently means something else.
fn validate_parquet(
    format: Format,
    compression: Compression,
    parquet: Option<ParquetRequest>,
    errors: &mut ValidationErrors,
) -> ParquetOptions {
    if format == Format::Parquet && compression != Compression::None {
        errors.push(
            "compression",
            "must be NONE with format PARQUET: a Parquet file is compressed inside, column by \
             column; choose its codec with `\"parquet\": {\"compression\": \"ZSTD\"}` \
             (ZSTD, the default, SNAPPY, GZIP or NONE)",
        );
    }
    let Some(parquet) = parquet else {
        return ParquetOptions::default();
    };
    if format != Format::Parquet {
        errors.push("parquet", "is only for destinations with format PARQUET");
    }
    let column_types = parquet.column_types.unwrap_or_default();
    check_column_types("parquet.columnTypes", &column_types, errors);
    ParquetOptions {
        compression: parquet.compression,
        column_types,
    }
}

/// Column names in a `columnTypes` map must not be empty.
pub(crate) fn check_column_types(field: &str, types: &ColumnTypes, errors: &mut ValidationErrors) {
    if types.contains_key("") {
        errors.push(field, "column names must not be empty");
    }
}

impl DestinationRequest {
    /// Checks every field and reports all problems at once, each under its field path.
    pub fn validate(self) -> Result<DestinationSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push("name", "must be 1 to 200 characters");
        }
        let bucket = errors.check("s3.bucket", BucketName::parse(&self.s3.bucket));
        let region = errors.check("s3.region", Region::parse(&self.s3.region));
        let endpoint_url = match self.s3.endpoint_url.as_deref() {
            None | Some("") => Some(None),
            Some(u) => errors
                .check("s3.endpointUrl", EndpointUrl::parse(u))
                .map(Some),
        };
        let path_prefix = errors.check(
            "s3.pathPrefix",
            PathPrefix::parse(self.s3.path_prefix.as_deref().unwrap_or("")),
        );
        let credentials = validate_credentials(
            self.s3.credentials,
            self.s3.access_key_id,
            self.s3.secret_access_key,
            &mut errors,
        );
        let parquet = validate_parquet(self.format, self.compression, self.parquet, &mut errors);
        match (bucket, region, endpoint_url, path_prefix, credentials) {
            (
                Some(bucket),
                Some(region),
                Some(endpoint_url),
                Some(path_prefix),
                Some(credentials),
            ) if errors.is_empty() => Ok(DestinationSpec {
                name,
                s3: S3Settings {
                    bucket,
                    region,
                    endpoint_url,
                    path_prefix,
                    credentials,
                },
                format: self.format,
                compression: self.compression,
                parquet,
                status: self.status,
            }),
            _ => Err(errors),
        }
    }
}

/// A saved destination: its spec plus who owns it and when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub id: crate::DestinationId,
    pub tenant: crate::TenantId,
    pub spec: DestinationSpec,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

string_newtype_conversions!(BucketName, PathPrefix, Region, EndpointUrl);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> DestinationRequest {
        serde_json::from_value(json).unwrap()
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "type": "S3",
            "name": "Production S3 bucket",
            "s3": {
                "bucket": "acme-mapping-results",
                "region": "eu-west-1",
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "pathPrefix": "incoming/"
            },
            "status": "ACTIVE"
        })
    }

    #[test]
    fn the_documented_example_is_valid() {
        let spec = request(valid()).validate().unwrap();
        assert_eq!(spec.s3.bucket.as_str(), "acme-mapping-results");
        assert_eq!(spec.s3.path_prefix.as_str(), "incoming/");
        assert_eq!(spec.format, Format::Csv, "CSV is the default format");
        assert_eq!(spec.compression, Compression::None);
        assert_eq!(spec.status, DestinationStatus::Active);
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my.bucket-1", "a1b", &"a".repeat(63)] {
            assert!(BucketName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "bucket_name",
            "-abc",
            "abc-",
            "a..b",
            "192.168.5.4",
            "xn--abc",
            "sthree-abc",
            "abc-s3alias",
            "abc--ol-s3",
        ] {
            assert!(BucketName::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn path_prefix_without_slash_explains_the_mistake() {
        let err = PathPrefix::parse("incoming").unwrap_err();
        assert!(err.contains("must end with `/`"), "{err}");
        assert!(err.contains("incomingmapping_results_"), "{err}");
        assert!(PathPrefix::parse("/abs/").is_err());
        assert!(PathPrefix::parse("a//b/").is_err());
        assert!(PathPrefix::parse("a/../b/").is_err());
        assert!(PathPrefix::parse("acme/prod/exports/").is_ok());
    }

    #[test]
    fn endpoint_urls_must_be_plain_http_or_https() {
        assert_eq!(
            EndpointUrl::parse("https://abc.r2.cloudflarestorage.com/")
                .unwrap()
                .as_str(),
            "https://abc.r2.cloudflarestorage.com"
        );
        let minio = EndpointUrl::parse("http://minio.internal:9000").unwrap();
        assert_eq!(minio.host(), "minio.internal");
        assert_eq!(minio.port_or_default(), 9000);
        for bad in [
            "ftp://x",
            "not a url",
            "http://u:p@host",
            "https://h/?q=1",
            "http://",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_private_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "52.95.110.1", "2600:1f18::1"] {
            assert!(!is_private_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn all_errors_are_reported_with_their_field() {
        let mut body = valid();
        body["name"] = "".into();
        body["s3"]["bucket"] = "Bad_Bucket".into();
        body["s3"]["pathPrefix"] = "incoming".into();
        body["s3"]["endpointUrl"] = "ftp://x".into();
        body["s3"]["region"] = "EU WEST".into();
        let errs = request(body).validate().unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "s3.bucket",
                "s3.region",
                "s3.endpointUrl",
                "s3.pathPrefix"
            ]
        );
    }

    #[test]
    fn credentials_come_in_pairs_or_not_at_all() {
        let mut body = valid();
        body["s3"]
            .as_object_mut()
            .unwrap()
            .remove("secretAccessKey");
        let errs = request(body).validate().unwrap_err();
        assert_eq!(errs.0[0].field, "s3.secretAccessKey");

        let mut body = valid();
        let s3 = body["s3"].as_object_mut().unwrap();
        s3.remove("secretAccessKey");
        s3.remove("accessKeyId");
        let spec = request(body.clone()).validate().unwrap();
        assert_eq!(
            spec.s3.credentials,
            Credentials::Anonymous,
            "no keys: unsigned"
        );

        body["s3"]["credentials"] = "DEFAULT_CHAIN".into();
        let spec = request(body.clone()).validate().unwrap();
        assert_eq!(spec.s3.credentials, Credentials::DefaultChain);

        body["s3"]["credentials"] = "STATIC".into();
        let errs = request(body).validate().unwrap_err();
        assert_eq!(errs.0[0].field, "s3.accessKeyId");

        let mut body = valid();
        body["s3"]["credentials"] = "NONE".into();
        let errs = request(body).validate().unwrap_err();
        assert_eq!(errs.0[0].field, "s3.accessKeyId");
        assert!(errs.0[0].message.contains("only used with STATIC"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut body = valid();
        body["s3"]["acl"] = "public-read".into();
        let err = serde_json::from_value::<DestinationRequest>(body).unwrap_err();
        assert!(err.to_string().contains("unknown field `acl`"), "{err}");
    }

    #[test]
    fn parquet_settings_go_with_format_parquet_only() {
        let mut body = valid();
        body["format"] = "PARQUET".into();
        let spec = request(body.clone()).validate().unwrap();
        assert_eq!(spec.format, Format::Parquet);
        assert_eq!(spec.parquet, ParquetOptions::default());
        assert_eq!(spec.parquet.compression, ParquetCompression::Zstd);

        body["parquet"] = serde_json::json!({
            "compression": "SNAPPY", "columnTypes": {"at": "TIMESTAMP", "n": "INT64"}
        });
        let spec = request(body.clone()).validate().unwrap();
        assert_eq!(spec.parquet.compression, ParquetCompression::Snappy);
        assert_eq!(
            spec.parquet.column_types.get("at"),
            Some(&crate::format::ColumnType::Timestamp)
        );

        // gzip around the file would make it unreadable: refused, pointing to the codec.
        body["compression"] = "GZIP".into();
        let errs = request(body.clone()).validate().unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "compression");
        assert!(
            errs.0[0]
                .message
                .contains(r#""parquet": {"compression": "ZSTD"}"#)
        );

        // Parquet settings on another format mean nothing: refused.
        body["compression"] = "NONE".into();
        body["format"] = "CSV".into();
        let errs = request(body.clone()).validate().unwrap_err();
        assert_eq!(errs.0[0].field, "parquet");

        body["format"] = "PARQUET".into();
        body["parquet"] = serde_json::json!({"columnTypes": {"": "INT64"}});
        let errs = request(body.clone()).validate().unwrap_err();
        assert_eq!(errs.0[0].field, "parquet.columnTypes");
        body["parquet"] = serde_json::json!({"columnTypes": {"a": "DECIMAL"}});
        assert!(serde_json::from_value::<DestinationRequest>(body.clone()).is_err());
        body["parquet"] = serde_json::json!({"codec": "ZSTD"});
        assert!(serde_json::from_value::<DestinationRequest>(body).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("wJalrXUtnFEMI");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let spec = request(valid()).validate().unwrap();
        assert!(!format!("{spec:?}").contains("wJalrXUtnFEMI"));
        assert_eq!(mask_access_key_id("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask_access_key_id("short"), "****");
    }
}
