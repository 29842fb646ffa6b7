//! A customer's delivery destination: which bucket, where in it, in what format.
//!
//! A [`DestinationSpec`] is made only of validated newtypes, so nothing invalid reaches a
//! worker. The API's request body and its validation into a spec live with the other wire
//! types in `courier-producer` (`wire::destination`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::format::{CsvOptions, ParquetOptions};
pub use crate::role::{ExternalId, RoleArn, RoleCredentials};
pub use crate::write_options::WriteOptions;
use crate::{Compression, Format, TenantId};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DestinationStatus {
    #[default]
    Active,
    /// Deliveries are accepted and held until the destination is active again.
    Paused,
}

/// The destination type; only S3 (and S3-compatible stores) for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestinationType {
    S3,
}

/// An access key pair saved with the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// How requests to a destination are signed, as named in the API (`s3.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CredentialsMode {
    /// `accessKeyId` and `secretAccessKey` saved with the destination.
    Static,
    /// Unsigned requests, for buckets that allow anonymous writes.
    None,
    /// The AWS default credential chain of the worker (environment, profile, web
    /// identity, instance role), for operators who run Courier inside AWS.
    DefaultChain,
    /// A role in the customer's account (`roleArn`), assumed by the fleet's own identity
    /// with the tenant's ExternalId; open to every tenant.
    Role,
}

/// How requests to a destination are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Static(StaticCredentials),
    Anonymous,
    DefaultChain,
    Role(RoleCredentials),
}

impl Credentials {
    /// Whether `tenant` may use these credentials: `DEFAULT_CHAIN` writes with the fleet's
    /// own AWS identity, so only the tenants the operator names (`allowed`,
    /// `COURIER_DEFAULT_CHAIN_TENANTS`) may; everything else is the tenant's own. The API
    /// checks this when a destination is saved, the workers again before they use it.
    pub fn lent_to(&self, tenant: &TenantId, allowed: &[TenantId]) -> Result<(), &'static str> {
        if matches!(self, Credentials::DefaultChain) && !allowed.contains(tenant) {
            return Err(
                "DEFAULT_CHAIN writes with the fleet's own AWS identity, which only the tenants \
                 the operator names in COURIER_DEFAULT_CHAIN_TENANTS may use; give STATIC \
                 credentials (an access key of your own)",
            );
        }
        Ok(())
    }

    pub fn mode(&self) -> CredentialsMode {
        match self {
            Credentials::Static(_) => CredentialsMode::Static,
            Credentials::Anonymous => CredentialsMode::None,
            Credentials::DefaultChain => CredentialsMode::DefaultChain,
            Credentials::Role(_) => CredentialsMode::Role,
        }
    }

    pub fn as_static(&self) -> Option<&StaticCredentials> {
        match self {
            Credentials::Static(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_role(&self) -> Option<&RoleCredentials> {
        match self {
            Credentials::Role(r) => Some(r),
            _ => None,
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
    /// What every object carries (encryption, class, tags, ACL) and the bucket's expected
    /// owner.
    pub write: WriteOptions,
}

/// A destination configuration with every field validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    pub s3: S3Settings,
    pub format: Format,
    /// gzip around the whole file; always `None` with [`Format::Parquet`]
    /// ([`Format::check_compression`]).
    pub compression: Compression,
    /// Used only with [`Format::Csv`]; the defaults otherwise.
    pub csv: CsvOptions,
    /// Used only with [`Format::Parquet`]; the defaults otherwise.
    pub parquet: ParquetOptions,
    pub status: DestinationStatus,
    /// Batched delivery: rows appended to windows, one gzip NDJSON object (or more) per
    /// window; `None` for one object per delivery. Always with NDJSON and gzip.
    pub batch: Option<crate::batch::BatchSettings>,
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
}
