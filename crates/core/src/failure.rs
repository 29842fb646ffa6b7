//! The one place that decides whether a failed attempt is worth retrying.

use serde::{Deserialize, Serialize};

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    /// Likely to pass on a later try: 5xx, throttling, timeouts, connection errors.
    Transient,
    /// Will fail the same way until someone changes the configuration or the bucket.
    Permanent,
}

impl ErrorClass {
    /// The bounded label value used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// S3 error codes that retrying cannot fix: the customer must change something.
pub const PERMANENT_S3_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "AuthorizationHeaderMalformed",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidRequest",
    "InvalidArgument",
    "InvalidToken",
    "ExpiredToken",
    "NoSuchBucket",
    "PermanentRedirect",
    "SignatureDoesNotMatch",
    "MissingContentLength",
    "EntityTooLarge",
    "InvalidDigest",
    "BadDigest",
    "KMS.DisabledException",
];

/// S3 error codes that mean "try again later", whatever the HTTP status says.
pub const TRANSIENT_S3_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "OperationAborted",
];

/// Classifies a failed S3 request from its HTTP status and error code. Without a status
/// (no response at all: refused connection, DNS failure, timeout) the failure is transient.
pub fn classify_s3(status: Option<u16>, code: Option<&str>) -> ErrorClass {
    if let Some(code) = code {
        if TRANSIENT_S3_CODES.contains(&code) {
            return ErrorClass::Transient;
        }
        if PERMANENT_S3_CODES.contains(&code) {
            return ErrorClass::Permanent;
        }
    }
    match status {
        None => ErrorClass::Transient,
        Some(408 | 429) => ErrorClass::Transient,
        Some(s) if s >= 500 => ErrorClass::Transient,
        Some(_) => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_codes_stop_at_once() {
        for code in [
            "AccessDenied",
            "NoSuchBucket",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(
                classify_s3(Some(403), Some(code)),
                ErrorClass::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn transient_by_code_status_or_missing_response() {
        assert_eq!(
            classify_s3(Some(503), Some("SlowDown")),
            ErrorClass::Transient
        );
        // S3 may answer 200 with an InternalError body for some operations.
        assert_eq!(
            classify_s3(Some(200), Some("InternalError")),
            ErrorClass::Transient
        );
        assert_eq!(classify_s3(Some(500), None), ErrorClass::Transient);
        assert_eq!(classify_s3(Some(429), None), ErrorClass::Transient);
        assert_eq!(classify_s3(None, None), ErrorClass::Transient);
        assert_eq!(
            classify_s3(Some(400), Some("SomethingNew")),
            ErrorClass::Permanent
        );
    }
}
