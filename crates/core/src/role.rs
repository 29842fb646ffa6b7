//! Cross-account roles: the ARN of a customer's role, the ExternalId Courier issues per
//! tenant, and the session name Courier assumes it under.
//!
//! AWS's guidance against the "confused deputy": the ExternalId is issued by the vendor,
//! unique per customer and never chosen by the customer, so another customer of Courier
//! cannot make the fleet assume your role by naming its ARN. Courier generates it (see
//! `courier_store::tenants`), shows it read-only, and refuses a role that can be assumed
//! without it (the connection test).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DestinationId;

/// The ARN of an IAM role: `arn:{partition}:iam::{12-digit account}:role/{path/}{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleArn(String);

/// The characters IAM allows in a role name (`[\w+=,.@-]`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

impl RoleArn {
    pub fn parse(s: &str) -> Result<Self, String> {
        let fail = |why: &str| {
            Err(format!(
                "roleArn `{s}` is not an IAM role ARN ({why}); it looks like \
                 arn:aws:iam::123456789012:role/courier-delivery"
            ))
        };
        if s.len() > 2048 {
            return fail("at most 2048 characters");
        }
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return fail("it must start with `arn:aws:iam::`");
        };
        let partition_ok = partition == "aws"
            || partition.strip_prefix("aws-").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            });
        if !partition_ok {
            return fail("the partition must be `aws`, `aws-cn`, `aws-us-gov`, …");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return fail("the account must be 12 digits");
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return fail("the resource must be `role/` and the role's name");
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if name.is_empty()
            || name.chars().count() > 64
            || !path_and_name.chars().all(|c| c == '/' || is_name_char(c))
        {
            return fail("the role name must be 1 to 64 of `A-Z a-z 0-9 _ + = , . @ -`");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The ExternalId a tenant's roles must require in their trust policy
/// (`"Condition": {"StringEquals": {"sts:ExternalId": …}}`). Not a secret (it is shown to
/// the customer to put in their trust policy), but only Courier chooses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

impl ExternalId {
    /// Length of the ids Courier issues.
    pub const LEN: usize = 32;

    /// An id as STS accepts it: 2 to 1224 of `[\w+=,.@:/-]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (2..=1224).contains(&s.len())
            && s.chars().all(|c| is_name_char(c) || c == ':' || c == '/');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("an ExternalId must be 2 to 1224 of `A-Z a-z 0-9 _ + = , . @ : / -`".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role and the ExternalId to assume it with. The ExternalId is the tenant's, copied in
/// when the destination is saved (it never changes), so a worker needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub role_arn: RoleArn,
    pub external_id: ExternalId,
}

/// The session name the workers assume a destination's role under:
/// `courier-{destination id}`. It shows in the customer's CloudTrail as the assumed-role
/// principal's name, so they can tell which destination wrote. At most 64 characters of
/// `[\w+=,.@-]` (STS's limit).
pub fn role_session_name(destination: &DestinationId) -> String {
    session_name(&format!("courier-{destination}"))
}

/// The session name of a connection test: `courier-test-{destination id}`, or
/// `courier-test` for a configuration not saved yet.
pub fn test_session_name(destination: Option<&DestinationId>) -> String {
    match destination {
        Some(id) => session_name(&format!("courier-test-{id}")),
        None => "courier-test".to_owned(),
    }
}

fn session_name(name: &str) -> String {
    name.chars().filter(|&c| is_name_char(c)).take(64).collect()
}

impl fmt::Display for RoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the role `{}`", self.role_arn)
    }
}

string_newtype_conversions!(RoleArn, ExternalId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_have_the_iam_shape() {
        for ok in [
            "arn:aws:iam::123456789012:role/courier-delivery",
            "arn:aws:iam::123456789012:role/service-role/path/Name_1+=,.@-",
            "arn:aws-cn:iam::123456789012:role/x",
            "arn:aws-us-gov:iam::123456789012:role/x",
        ] {
            assert!(RoleArn::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "courier-delivery",
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::1234567890123:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam:eu-west-1:123456789012:role/x",
            "arn:azure:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            &format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65)),
        ] {
            let err = RoleArn::parse(bad).unwrap_err();
            assert!(
                err.contains("arn:aws:iam::123456789012:role/"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn session_names_fit_sts_limits() {
        let id = DestinationId::generate();
        let name = role_session_name(&id);
        assert_eq!(name, format!("courier-{id}"));
        assert!(name.len() <= 64);
        let test = test_session_name(Some(&id));
        assert_eq!(test, format!("courier-test-{id}"));
        assert!(test.len() <= 64);
        assert_eq!(test_session_name(None), "courier-test");
    }

    #[test]
    fn external_ids_follow_sts_rules() {
        assert!(ExternalId::parse("abcDEF0123456789abcDEF0123456789").is_ok());
        assert!(ExternalId::parse("a").is_err());
        assert!(ExternalId::parse("has space").is_err());
    }
}
