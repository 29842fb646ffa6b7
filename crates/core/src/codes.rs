//! Every error code Courier reports, and the class (transient or permanent) of each.
//!
//! The codes are what customers, dead letters and dashboards see: the store's own codes
//! (`AccessDenied`, `SlowDown`, …), the names Courier gives a failure without an answer
//! (`Timeout`, `ConnectionFailed`, …), and Courier's own reasons (`RenderFailed`,
//! `RetriesExhausted`, …). A code the table does not know (a store's new code) is kept as
//! [`ErrorCode::Other`] with its exact text, so the wire never changes. Each code is
//! written once, in the table below, with its text and its class; the advice a customer
//! gets for a code lives with the connection test (`courier_s3::hints`), which needs the
//! destination's settings to give it. Who a failure is charged to (the destination, the
//! rows or Courier itself) is [`ErrorCode::charged_to`], one exhaustive match, so a new
//! code does not compile until someone says whose it is.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::failure::{ChargedTo, ErrorClass, class_of_status};

/// The class of a code that is always transient.
const T: Option<ErrorClass> = Some(ErrorClass::Transient);
/// The class of a code that is always permanent.
const P: Option<ErrorClass> = Some(ErrorClass::Permanent);
/// A code whose class follows the HTTP status (see [`class_of_status`]).
const S: Option<ErrorClass> = None;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, $class:ident; )*) => {
        /// An error code. Its text ([`ErrorCode::as_str`]) is the wire form.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code not in the table (a store's own), with its exact text; classified by
            /// the HTTP status it came with.
            Other(OtherCode),
        }

        impl ErrorCode {
            /// The code as customers see it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Other(s) => &s.0,
                }
            }

            /// The code for `text`: a known one, or [`ErrorCode::Other`].
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => Self::$variant, )*
                    other => Self::Other(OtherCode(other.to_owned())),
                }
            }

            /// The class this code has whatever the HTTP status; `None` when the status
            /// decides.
            pub fn fixed_class(&self) -> Option<ErrorClass> {
                match self {
                    $( Self::$variant => $class, )*
                    Self::Other(_) => S,
                }
            }

            /// Every code of the table (not [`ErrorCode::Other`]), for tests and docs.
            pub const ALL: &'static [ErrorCode] = &[ $( Self::$variant, )* ];
        }
    };
}

error_codes! {
    // The store's codes that retrying cannot fix: the customer must change something.
    AccessDenied = "AccessDenied", P;
    AllAccessDisabled = "AllAccessDisabled", P;
    AccountProblem = "AccountProblem", P;
    AuthorizationHeaderMalformed = "AuthorizationHeaderMalformed", P;
    InvalidAccessKeyId = "InvalidAccessKeyId", P;
    InvalidBucketName = "InvalidBucketName", P;
    InvalidRequest = "InvalidRequest", P;
    InvalidArgument = "InvalidArgument", P;
    InvalidToken = "InvalidToken", P;
    ExpiredToken = "ExpiredToken", P;
    NoSuchBucket = "NoSuchBucket", P;
    PermanentRedirect = "PermanentRedirect", P;
    SignatureDoesNotMatch = "SignatureDoesNotMatch", P;
    MissingContentLength = "MissingContentLength", P;
    EntityTooLarge = "EntityTooLarge", P;
    InvalidDigest = "InvalidDigest", P;
    BadDigest = "BadDigest", P;
    KmsDisabled = "KMS.DisabledException", P;
    // The store's codes that mean "try again later", whatever the HTTP status says.
    SlowDown = "SlowDown", T;
    InternalError = "InternalError", T;
    ServiceUnavailable = "ServiceUnavailable", T;
    RequestTimeout = "RequestTimeout", T;
    RequestTimeTooSkewed = "RequestTimeTooSkewed", T;
    Throttling = "Throttling", T;
    ThrottlingException = "ThrottlingException", T;
    RequestLimitExceeded = "RequestLimitExceeded", T;
    TooManyRequests = "TooManyRequests", T;
    OperationAborted = "OperationAborted", T;
    // The store's codes whose class follows the status, named here for their hints.
    IllegalLocationConstraintException = "IllegalLocationConstraintException", S;
    // Names for a bare status (HEAD answers have no body).
    BadRequest = "BadRequest", S;
    NotFound = "NotFound", S;
    MethodNotAllowed = "MethodNotAllowed", S;
    // Courier's names for a request that got no answer.
    Timeout = "Timeout", S;
    ConnectionFailed = "ConnectionFailed", S;
    DispatchFailure = "DispatchFailure", S;
    /// The host leads to an address tenant traffic may not reach (loopback, private, …);
    /// checked when the connection is made.
    EgressRefused = "EgressRefused", P;
    /// `DEFAULT_CHAIN` credentials on a destination of a tenant the operator did not name in
    /// `COURIER_DEFAULT_CHAIN_TENANTS`.
    DefaultChainNotAllowed = "DefaultChainNotAllowed", P;
    /// The fleet could not assume a `ROLE` destination's role; the message carries STS's
    /// code (`AccessDenied`: the trust policy lacks the fleet's principal or the ExternalId).
    /// Classed by STS's status: refused is permanent, no answer or a 5xx transient.
    AssumeRoleFailed = "AssumeRoleFailed", S;
    /// The connection test could assume the role *without* the ExternalId: its trust policy
    /// does not require `sts:ExternalId`, so any AWS customer of the fleet could use it.
    RoleAssumableWithoutExternalId = "RoleAssumableWithoutExternalId", P;
    /// An answer that could not be read.
    InvalidResponse = "InvalidResponse", S;
    /// The request could not be signed or built (e.g. no default credentials).
    RequestConstructionFailed = "RequestConstructionFailed", P;
    Unknown = "Unknown", S;
    // Courier's own failures while uploading.
    /// A rendered file could not be read back for its upload.
    SpoolReadFailed = "SpoolReadFailed", T;
    /// The uploader stopped taking parts (the store failed first).
    UploadStopped = "UploadStopped", T;
    /// A part could not be read for its upload.
    ReadFailed = "ReadFailed", P;
    /// The worker's own disk or temporary files failed while rendering (disk full, temp
    /// directory unwritable): another try, perhaps on another worker, may pass.
    LocalIoFailed = "LocalIoFailed", T;
    // Row sources (`rowsUrl`).
    InvalidRowsUrl = "InvalidRowsUrl", P;
    RowsUrlOutsideStaging = "RowsUrlOutsideStaging", P;
    /// An `s3://` rowsUrl in the staging bucket but not under the delivery's own
    /// `{tenant}/` (or with a key that is not plainly there: `..`, `//`, `%`-escapes, …).
    RowsOutsideTenant = "RowsOutsideTenant", P;
    /// One NDJSON line of the rows is longer than `COURIER_MAX_ROW_BYTES`.
    RowTooLong = "RowTooLong", P;
    /// The rows (decompressed) are more than `COURIER_MAX_ROWS_BYTES`.
    RowsTooLarge = "RowsTooLarge", P;
    /// Fetching the rows took longer than `COURIER_ROWS_FETCH_TIMEOUT_SECS` in all.
    RowsFetchTimeout = "RowsFetchTimeout", P;
    StagingNotConfigured = "StagingNotConfigured", P;
    /// The rows' server answered with an error status.
    RowsUnavailable = "RowsUnavailable", S;
    /// Reading the rows failed mid-stream (a cut connection).
    SourceReadFailed = "SourceReadFailed", T;
    // Why a delivery ended without its object.
    /// The rows could not be read or rendered.
    RenderFailed = "RenderFailed", P;
    /// A transient failure outlasted the retry policy.
    RetriesExhausted = "RetriesExhausted", P;
    /// The destination was deleted while the delivery waited.
    DestinationNotFound = "DestinationNotFound", P;
    /// The task payload was not a delivery task.
    UndecodableTask = "UndecodableTask", P;
    /// A newer result is already at the key.
    Superseded = "Superseded", P;
    // Courier's own storage (Redis) failing while it handles a delivery.
    /// Courier's own storage refused or lost a read or write while handling the delivery
    /// (Redis at `maxmemory`, a read-only replica, a refused connection); retried by the
    /// retry policy like any transient failure.
    StorageFailed = "StorageFailed", T;
    /// Courier's own storage kept failing until the retry policy gave up (or, for a task
    /// apalis-redis itself gave up on, until apalis's 25 tries were spent).
    StorageRetriesExhausted = "StorageRetriesExhausted", P;
    /// The delivery was held (its destination paused or failing) for longer than
    /// `COURIER_HELD_MAX_AGE_SECS` after it was enqueued.
    HeldTooLong = "HeldTooLong", P;
    /// The delivery was enqueued longer ago than the stale-overwrite guard remembers what
    /// its key holds: uploading it could put an older result over a newer one unnoticed.
    DeliveryExpired = "DeliveryExpired", P;
    /// Another delivery took the object key's lock while this one uploaded: the upload was
    /// aborted and the delivery put back in the queue. Never a record's final code.
    KeyLockLost = "KeyLockLost", T;
}

/// The text of a code not in the table. Only [`ErrorCode::parse`] and its `From`s make
/// one, so it never spells a known code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherCode(String);

impl OtherCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ErrorCode {
    /// The class of a failure with this code and HTTP status (`None`: no answer at all).
    pub fn class(&self, status: Option<u16>) -> ErrorClass {
        self.fixed_class()
            .unwrap_or_else(|| class_of_status(status))
    }

    /// A failure on the store's side that a later try may not see: a store code that
    /// always means "try again later", or a bare 5xx.
    pub fn is_store_side(&self) -> bool {
        match self {
            Self::Other(s) => s.0.starts_with("Http5"),
            c => c.fixed_class() == T && c.is_from_store(),
        }
    }

    /// Codes the store itself sends (as opposed to Courier's names).
    fn is_from_store(&self) -> bool {
        !matches!(
            self,
            Self::SpoolReadFailed
                | Self::UploadStopped
                | Self::SourceReadFailed
                | Self::StorageFailed
                | Self::KeyLockLost
                | Self::LocalIoFailed
        )
    }

    /// Who a failure with this code is charged to when nothing else is known of where it
    /// came from. The store's codes and Courier's names for a store that did not answer
    /// are the destination's; the row source's codes are the rows'; Courier's own are
    /// Courier's. The worker knows more: a store code met while reading staged rows is the
    /// rows' (see the worker's `decide`). Exhaustive on purpose: a new code must say whose
    /// it is (a row-stream limit, for instance, is one line under `Rows`).
    pub fn charged_to(&self) -> ChargedTo {
        use ChargedTo::{Courier, Destination, Rows};
        match self {
            Self::AccessDenied
            | Self::AllAccessDisabled
            | Self::AccountProblem
            | Self::AuthorizationHeaderMalformed
            | Self::InvalidAccessKeyId
            | Self::InvalidBucketName
            | Self::InvalidRequest
            | Self::InvalidArgument
            | Self::InvalidToken
            | Self::ExpiredToken
            | Self::NoSuchBucket
            | Self::PermanentRedirect
            | Self::SignatureDoesNotMatch
            | Self::MissingContentLength
            | Self::EntityTooLarge
            | Self::InvalidDigest
            | Self::BadDigest
            | Self::KmsDisabled
            | Self::SlowDown
            | Self::InternalError
            | Self::ServiceUnavailable
            | Self::RequestTimeout
            | Self::RequestTimeTooSkewed
            | Self::Throttling
            | Self::ThrottlingException
            | Self::RequestLimitExceeded
            | Self::TooManyRequests
            | Self::OperationAborted
            | Self::IllegalLocationConstraintException
            | Self::BadRequest
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::Timeout
            | Self::ConnectionFailed
            | Self::DispatchFailure
            | Self::EgressRefused
            | Self::DefaultChainNotAllowed
            | Self::InvalidResponse
            | Self::RequestConstructionFailed
            | Self::Unknown
            | Self::UploadStopped
            | Self::AssumeRoleFailed
            | Self::RoleAssumableWithoutExternalId
            | Self::Other(_) => Destination,
            Self::InvalidRowsUrl
            | Self::RowsUrlOutsideStaging
            | Self::RowsUnavailable
            | Self::SourceReadFailed
            | Self::RowsOutsideTenant
            | Self::RowTooLong
            | Self::RowsTooLarge
            | Self::RowsFetchTimeout
            | Self::RenderFailed => Rows,
            Self::StagingNotConfigured
            | Self::SpoolReadFailed
            | Self::ReadFailed
            | Self::LocalIoFailed
            | Self::RetriesExhausted
            | Self::DestinationNotFound
            | Self::UndecodableTask
            | Self::StorageFailed
            | Self::StorageRetriesExhausted
            | Self::KeyLockLost
            | Self::HeldTooLong
            | Self::DeliveryExpired
            | Self::Superseded => Courier,
        }
    }

    /// The name of a bare HTTP status, for answers without an error code.
    pub fn of_status(status: u16) -> Self {
        match status {
            301 => Self::PermanentRedirect,
            400 => Self::BadRequest,
            403 => Self::AccessDenied,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            500 => Self::InternalError,
            503 => Self::ServiceUnavailable,
            _ => Self::Other(OtherCode(format!("Http{status}"))),
        }
    }
}

impl From<String> for ErrorCode {
    fn from(s: String) -> Self {
        match Self::parse(&s) {
            Self::Other(_) => Self::Other(OtherCode(s)),
            known => known,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl From<ErrorCode> for String {
    fn from(c: ErrorCode) -> String {
        match c {
            ErrorCode::Other(s) => s.0,
            known => known.as_str().to_owned(),
        }
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Permanent, Transient};

    #[test]
    fn every_code_reads_back_from_its_text() {
        for code in ErrorCode::ALL {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
        let new = ErrorCode::from("SomethingNew");
        assert!(matches!(&new, ErrorCode::Other(s) if s.as_str() == "SomethingNew"));
        assert_eq!(
            ErrorCode::from(String::from("AccessDenied")),
            ErrorCode::AccessDenied
        );
        assert_eq!(new.to_string(), "SomethingNew");
        let back: ErrorCode = serde_json::from_str("\"KMS.DisabledException\"").unwrap();
        assert_eq!(back, ErrorCode::KmsDisabled);
    }

    #[test]
    fn permanent_codes_stop_at_once() {
        for code in [
            "AccessDenied",
            "NoSuchBucket",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(ErrorCode::from(code).class(Some(403)), Permanent, "{code}");
        }
    }

    #[test]
    fn transient_by_code_status_or_missing_response() {
        let class = |status, code: Option<&str>| {
            code.map_or(ErrorCode::Unknown, ErrorCode::from)
                .class(status)
        };
        assert_eq!(class(Some(503), Some("SlowDown")), Transient);
        // S3 may answer 200 with an InternalError body for some operations.
        assert_eq!(class(Some(200), Some("InternalError")), Transient);
        assert_eq!(class(Some(500), None), Transient);
        assert_eq!(class(Some(429), None), Transient);
        assert_eq!(class(Some(408), None), Transient);
        assert_eq!(class(None, None), Transient);
        assert_eq!(class(Some(400), Some("SomethingNew")), Permanent);
        assert_eq!(class(None, Some("Timeout")), Transient);
        assert_eq!(class(None, Some("RequestConstructionFailed")), Permanent);
    }

    #[test]
    fn courier_own_codes_have_their_class() {
        for code in [
            ErrorCode::RenderFailed,
            ErrorCode::RetriesExhausted,
            ErrorCode::DestinationNotFound,
            ErrorCode::InvalidRowsUrl,
            ErrorCode::RowsUrlOutsideStaging,
            ErrorCode::StagingNotConfigured,
            ErrorCode::RowsOutsideTenant,
            ErrorCode::RowTooLong,
            ErrorCode::RowsTooLarge,
            ErrorCode::RowsFetchTimeout,
            ErrorCode::HeldTooLong,
            ErrorCode::DeliveryExpired,
        ] {
            assert_eq!(code.class(None), Permanent, "{code}");
        }
        for code in [
            ErrorCode::UploadStopped,
            ErrorCode::SourceReadFailed,
            ErrorCode::KeyLockLost,
            ErrorCode::LocalIoFailed,
        ] {
            assert_eq!(code.class(None), Transient, "{code}");
            assert!(!code.is_store_side(), "{code} is Courier's own");
        }
        assert_eq!(ErrorCode::RowsUnavailable.class(Some(404)), Permanent);
        assert_eq!(ErrorCode::RowsUnavailable.class(Some(502)), Transient);
    }

    #[test]
    fn bare_statuses_get_names() {
        assert_eq!(ErrorCode::of_status(403), ErrorCode::AccessDenied);
        assert_eq!(ErrorCode::of_status(502).as_str(), "Http502");
        assert!(ErrorCode::of_status(502).is_store_side());
        assert!(ErrorCode::SlowDown.is_store_side());
        assert!(!ErrorCode::AccessDenied.is_store_side());
        assert!(!ErrorCode::SourceReadFailed.is_store_side());
    }

    #[test]
    fn failures_are_charged_to_who_caused_them() {
        use ChargedTo::{Courier, Destination, Rows};
        let table = [
            // The store's answers, and a store that did not answer: the destination's.
            ("AccessDenied", Destination),
            ("NoSuchBucket", Destination),
            ("InvalidAccessKeyId", Destination),
            ("SignatureDoesNotMatch", Destination),
            ("KMS.DisabledException", Destination),
            ("EgressRefused", Destination),
            ("DefaultChainNotAllowed", Destination),
            ("SlowDown", Destination),
            ("ConnectionFailed", Destination),
            ("Timeout", Destination),
            ("Http502", Destination),
            ("SomethingNew", Destination),
            // The rows' reference and content.
            ("InvalidRowsUrl", Rows),
            ("RowsUrlOutsideStaging", Rows),
            ("RowsUnavailable", Rows),
            ("SourceReadFailed", Rows),
            ("RenderFailed", Rows),
            // Courier's own disk, configuration and bookkeeping.
            ("LocalIoFailed", Courier),
            ("SpoolReadFailed", Courier),
            ("ReadFailed", Courier),
            ("StagingNotConfigured", Courier),
            ("RetriesExhausted", Courier),
            ("DestinationNotFound", Courier),
            ("UndecodableTask", Courier),
            ("Superseded", Courier),
        ];
        for (code, charged) in table {
            assert_eq!(ErrorCode::from(code).charged_to(), charged, "{code}");
        }
        assert_eq!(Rows.label(), "rows");
        assert!(!ErrorCode::LocalIoFailed.is_store_side());
    }
}
