//! Identifiers. Ids are ULIDs behind a short type prefix (`dst_…`, `dlv_…`), so that an id
//! pasted into a support ticket says what it names, and ids sort by creation time.

use std::fmt;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, unique across the fleet.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, Ulid::new()))
            }

            /// Parses an id as it appears in a URL or a request body.
            pub fn parse(s: &str) -> Result<Self, String> {
                match s.strip_prefix($prefix) {
                    Some(rest) if Ulid::from_string(rest).is_ok() => Ok(Self(s.to_owned())),
                    _ => Err(format!(
                        "`{}` is not a valid id (expected `{}` followed by 26 characters)",
                        s.chars().take(64).collect::<String>(),
                        $prefix
                    )),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// Names one delivery destination.
    DestinationId,
    "dst_"
);
prefixed_id!(
    /// Names one delivery: one job's result to one destination.
    DeliveryId,
    "dlv_"
);

/// The customer an API token belongs to. Every destination and delivery has exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Tenant names appear in Redis keys, so they are limited to a safe alphabet.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "tenant `{s}` must be 1 to 64 characters of letters, digits, `-`, `_` or `.`"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = DestinationId::generate();
        assert!(id.as_str().starts_with("dst_"));
        assert_eq!(DestinationId::parse(id.as_str()).unwrap(), id);
        assert!(DeliveryId::parse(id.as_str()).is_err(), "prefix is checked");
        assert!(DestinationId::parse("dst_nope").is_err());
    }

    #[test]
    fn tenant_alphabet_is_enforced() {
        assert!(TenantId::parse("acme-prod_1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a:b").is_err());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
    }
}
