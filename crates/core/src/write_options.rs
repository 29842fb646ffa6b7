//! Write options of a destination: what a customer's bucket policy may require of every
//! object written into it (their KMS key, a storage class, tags, full control for the bucket
//! owner, the bucket's expected owner). Each is validated here, so a worker only ever sends
//! values S3 accepts; they go on PutObject and CreateMultipartUpload alike, and the expected
//! bucket owner on every request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Declares a closed set of S3 values spelled exactly as S3 spells them.
macro_rules! s3_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $( #[serde(rename = $text)] $variant, )*
        }

        impl $name {
            /// Every value, as S3 spells them.
            pub const ALL: &'static [&'static str] = &[$($text),*];

            /// The value as S3 spells it.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text, )* }
            }

            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $( $text => Ok(Self::$variant), )*
                    _ => Err(format!("`{s}` is not one of {}", Self::ALL.join(", "))),
                }
            }
        }
    };
}

s3_values! {
    /// `x-amz-server-side-encryption`.
    ServerSideEncryption {
        Aes256 = "AES256",
        AwsKms = "aws:kms",
        AwsKmsDsse = "aws:kms:dsse",
    }
}

s3_values! {
    /// `x-amz-storage-class`: the general purpose buckets' classes.
    StorageClass {
        Standard = "STANDARD",
        ReducedRedundancy = "REDUCED_REDUNDANCY",
        StandardIa = "STANDARD_IA",
        OnezoneIa = "ONEZONE_IA",
        IntelligentTiering = "INTELLIGENT_TIERING",
        Glacier = "GLACIER",
        DeepArchive = "DEEP_ARCHIVE",
        GlacierIr = "GLACIER_IR",
    }
}

s3_values! {
    /// `x-amz-acl`: only the canned ACLs that keep objects private (no `public-read`).
    CannedAcl {
        Private = "private",
        BucketOwnerRead = "bucket-owner-read",
        BucketOwnerFullControl = "bucket-owner-full-control",
    }
}

/// A KMS key for `aws:kms` encryption: a key id, an alias (`alias/…`), or the ARN of either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KmsKeyId(String);

impl KmsKeyId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/:.".contains(&b))
        };
        let key_or_alias = |t: &str| match t.strip_prefix("alias/") {
            Some(alias) => chars_ok(alias) && !alias.starts_with("aws/"),
            None => {
                let id = t.strip_prefix("mrk-").unwrap_or(t);
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            }
        };
        let ok = s.len() <= 2048
            && match s.strip_prefix("arn:") {
                Some(rest) => {
                    let p: Vec<&str> = rest.splitn(5, ':').collect();
                    p.len() == 5
                        && p[0].starts_with("aws")
                        && p[1] == "kms"
                        && !p[2].is_empty()
                        && p[3].len() == 12
                        && p[3].bytes().all(|b| b.is_ascii_digit())
                        && (p[4].strip_prefix("key/").is_some_and(key_or_alias)
                            || p[4].starts_with("alias/") && key_or_alias(p[4]))
                }
                None => key_or_alias(s),
            };
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a KMS key id (1234abcd-12ab-34cd-56ef-1234567890ab), alias \
                 (alias/my-key) or key ARN (arn:aws:kms:eu-west-1:123456789012:key/…)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An AWS account id: 12 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("`{s}` is not an AWS account id (12 digits)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Object tags: at most 10, keys 1 to 128 and values 0 to 256 characters of letters,
/// digits, spaces and `+ - = . _ : / @`, keys not starting with `aws:` (S3's limits).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct ObjectTags(BTreeMap<String, String>);

impl ObjectTags {
    /// S3's limit of tags per object.
    pub const MAX: usize = 10;

    pub fn parse(tags: BTreeMap<String, String>) -> Result<Self, String> {
        let allowed = |t: &str| {
            t.chars()
                .all(|c| c.is_alphanumeric() || " +-=._:/@".contains(c))
        };
        if tags.len() > Self::MAX {
            return Err(format!(
                "at most {} tags per object (S3's limit), not {}",
                Self::MAX,
                tags.len()
            ));
        }
        for (k, v) in &tags {
            if k.is_empty() || k.chars().count() > 128 {
                return Err(format!("tag key `{k}` must be 1 to 128 characters"));
            }
            if k.starts_with("aws:") {
                return Err(format!(
                    "tag key `{k}` must not start with `aws:` (reserved)"
                ));
            }
            if v.chars().count() > 256 {
                return Err(format!(
                    "the value of tag `{k}` must be at most 256 characters"
                ));
            }
            if !allowed(k) || !allowed(v) {
                return Err(format!(
                    "tag `{k}`: keys and values may contain only letters, digits, spaces and \
                     `+ - = . _ : / @`"
                ));
            }
        }
        Ok(Self(tags))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// The `x-amz-tagging` header: `k=v&k2=v2`, each part percent-encoded (RFC 3986
    /// unreserved characters kept), as S3 reads a URL query.
    pub fn header(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        Some(pairs.join("&"))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl TryFrom<BTreeMap<String, String>> for ObjectTags {
    type Error = String;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self, String> {
        Self::parse(m)
    }
}

impl From<ObjectTags> for BTreeMap<String, String> {
    fn from(t: ObjectTags) -> Self {
        t.0
    }
}

/// What every object written to a destination carries. All optional; the defaults send
/// nothing extra.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WriteOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// Only with `aws:kms` or `aws:kms:dsse`; without it S3 uses the bucket's default key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<KmsKeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    #[serde(skip_serializing_if = "ObjectTags::is_empty")]
    pub tags: ObjectTags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canned_acl: Option<CannedAcl>,
    /// Sent as `x-amz-expected-bucket-owner` on every request, so a bucket that changed
    /// hands is refused (403) instead of written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bucket_owner: Option<AccountId>,
}

impl WriteOptions {
    /// Checks the combination: a KMS key only with KMS encryption.
    pub fn check(&self) -> Result<(), String> {
        let kms = matches!(
            self.server_side_encryption,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        );
        if self.kms_key_id.is_some() && !kms {
            return Err(
                "is only used with serverSideEncryption `aws:kms` or `aws:kms:dsse`".into(),
            );
        }
        Ok(())
    }
}

string_newtype_conversions!(KmsKeyId, AccountId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_keys_ids_aliases_and_arns() {
        for ok in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/courier-deliveries",
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:alias/courier",
        ] {
            assert!(KmsKeyId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "my key",
            "alias/",
            "alias/aws/s3",
            "arn:aws:kms:eu-west-1:1234:key/abc",
            "arn:aws:s3:::bucket",
            "not-hex-zz",
        ] {
            assert!(KmsKeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_s3_limits_and_encode_as_a_query() {
        let tags = |pairs: &[(&str, &str)]| {
            ObjectTags::parse(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let t = tags(&[("team", "data eng"), ("cost/center", "a+b=c")]).unwrap();
        assert_eq!(
            t.header().unwrap(),
            "cost%2Fcenter=a%2Bb%3Dc&team=data%20eng"
        );
        assert!(tags(&[]).unwrap().header().is_none());
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), String::new())).collect();
        let refs: Vec<(&str, &str)> = eleven
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(tags(&refs).unwrap_err().contains("at most 10"));
        assert!(tags(&[("", "v")]).is_err());
        assert!(tags(&[("aws:x", "v")]).is_err());
        assert!(tags(&[(&"k".repeat(129), "v")]).is_err());
        assert!(tags(&[("k", &"v".repeat(257))]).is_err());
        assert!(tags(&[("k", "a&b")]).is_err());
        assert!(tags(&[("k", "ünïcode ok")]).is_ok());
    }

    #[test]
    fn values_are_spelled_as_s3_spells_them() {
        assert_eq!(
            ServerSideEncryption::parse("aws:kms:dsse").unwrap(),
            ServerSideEncryption::AwsKmsDsse
        );
        assert!(
            ServerSideEncryption::parse("AES128")
                .unwrap_err()
                .contains("AES256")
        );
        assert_eq!(
            StorageClass::parse("GLACIER_IR").unwrap().as_str(),
            "GLACIER_IR"
        );
        assert!(CannedAcl::parse("public-read").is_err());
        assert!(AccountId::parse("123456789012").is_ok());
        assert!(AccountId::parse("12345678901a").is_err());
        let opts = WriteOptions {
            kms_key_id: Some(KmsKeyId::parse("alias/k").unwrap()),
            server_side_encryption: Some(ServerSideEncryption::Aes256),
            ..WriteOptions::default()
        };
        assert!(opts.check().is_err());
        let json = serde_json::to_string(&WriteOptions::default()).unwrap();
        assert_eq!(json, "{}");
        let back: WriteOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(back, WriteOptions::default());
    }
}
