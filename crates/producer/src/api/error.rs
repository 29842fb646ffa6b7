//! The API's error responses: a status and a JSON body that names the problem.
//!
//! ```json
//! {"error": {"code": "VALIDATION_FAILED", "message": "…", "fields": [{"field": "s3.pathPrefix", "message": "…"}]}}
//! ```

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_core::ValidationErrors;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ServiceError;

/// The `Retry-After` (seconds) of every 503: Courier's storage refusing writes (Redis at
/// `maxmemory`, a failover, a refused connection) is usually a matter of seconds.
pub const RETRY_AFTER_SECS: u32 = 5;

/// An error response. Messages never contain secrets.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    /// The quota or rate limit a 429 is about.
    pub limit: Option<&'static str>,
    /// Seconds for the `Retry-After` header of a 429 or a 503.
    pub retry_after: Option<u64>,
}

/// One problem with one field of a request, e.g. `s3.pathPrefix`: "must end with `/`".
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field in the request body, dotted, with `[i]` for array elements.
    pub field: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl From<courier_core::FieldError> for FieldError {
    fn from(e: courier_core::FieldError) -> Self {
        Self {
            field: e.field,
            message: e.message,
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            limit: None,
            retry_after: None,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} `{id}` does not exist"),
        )
    }

    pub fn invalid(errors: ValidationErrors) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "VALIDATION_FAILED",
            message: format!("the request is invalid: {errors}"),
            fields: errors.0.into_iter().map(Into::into).collect(),
            limit: None,
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "storage unavailable");
        Self {
            retry_after: Some(u64::from(RETRY_AFTER_SECS)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "Courier's storage is unavailable; nothing was saved, retry later",
            )
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {
    "code": "VALIDATION_FAILED",
    "message": "the request is invalid: s3.pathPrefix: pathPrefix `incoming` must end with `/`",
    "fields": [{"field": "s3.pathPrefix", "message": "pathPrefix `incoming` must end with `/`"}]
}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `MALFORMED_JSON`, `BAD_REQUEST`, `UNAUTHORIZED`,
    /// `NOT_FOUND`, `DESTINATION_HAS_PENDING_DELIVERIES`, `NOT_FAILED`, `TASK_EXPIRED`,
    /// `PAYLOAD_TOO_LARGE`, `VALIDATION_FAILED`, `QUOTA_EXCEEDED`, `RATE_LIMITED` or
    /// `UNAVAILABLE`.
    #[schema(example = "VALIDATION_FAILED")]
    pub code: String,
    /// A sentence for humans; never contains secrets.
    pub message: String,
    /// Each field at fault, for `VALIDATION_FAILED`; left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    /// The quota or rate limit reached, for `QUOTA_EXCEEDED` and `RATE_LIMITED`:
    /// `destinationsPerTenant`, `waitingDeliveriesPerTenant` or `connectionTestsPerMinute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "waitingDeliveriesPerTenant")]
    pub limit: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                fields: self.fields,
                limit: self.limit.map(str::to_owned),
            },
        });
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { what, id } => Self::not_found(what, &id),
            ServiceError::Invalid(errors) => Self::invalid(errors),
            ServiceError::Conflict { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            ServiceError::TooMany {
                code,
                limit,
                message,
                retry_after,
            } => Self {
                limit: Some(limit),
                // Whole seconds, rounded up, and at least one.
                retry_after: Some(retry_after.as_millis().div_ceil(1000).max(1) as u64),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            },
            ServiceError::Unavailable { code, message } => {
                tracing::warn!(code, message, "request answered 503");
                Self {
                    retry_after: Some(u64::from(RETRY_AFTER_SECS)),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                }
            }
            ServiceError::Store(e) => Self::unavailable(e),
        }
    }
}

impl From<courier_store::StoreError> for ApiError {
    fn from(e: courier_store::StoreError) -> Self {
        Self::unavailable(e)
    }
}
