//! Identifiers. Ids are ULIDs behind a short type prefix (`dst_…`, `dlv_…`), so that an id
//! pasted into a support ticket says what it names, and ids sort by creation time.

use std::fmt;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// A ULID greater than the last one this process made: within one millisecond the random
/// part counts up instead of being drawn again (`ulid::Generator`).
fn monotonic_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    GENERATOR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .generate()
        // Only 2^80 ids in one millisecond overflow it; a fresh random one is still unique.
        .unwrap_or_else(|_| Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, unique across the fleet, and greater than every id this process
            /// generated before (so lists ordered by id are in creation order, even for ids
            /// made within one millisecond).
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, monotonic_ulid()))
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
    /// Tenant names appear in Redis keys and as the first segment of staged rows' keys
    /// (`{tenant}/…`), so they are limited to a safe alphabet and start with a letter or a
    /// digit: never `.`, `..` or anything else a path could read as special.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s.len() <= 64
            && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "tenant `{s}` must be 1 to 64 characters of letters, digits, `-`, `_` or `.`, \
                 starting with a letter or a digit"
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
    fn ids_made_in_one_millisecond_still_sort_in_creation_order() {
        let ids: Vec<DestinationId> = (0..10_000).map(|_| DestinationId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }

    #[test]
    fn tenant_alphabet_is_enforced() {
        assert!(TenantId::parse("acme-prod_1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a:b").is_err());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
        assert!(TenantId::parse("acme.eu").is_ok());
        for special in [".", "..", ".acme", "-acme", "_acme"] {
            assert!(TenantId::parse(special).is_err(), "{special}");
        }
    }
}
