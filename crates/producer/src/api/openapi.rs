//! The OpenAPI description of the control API, served without a token at
//! `GET /api/v1/openapi.json`.
//!
//! It is generated from the code, so it cannot drift from what is served:
//!
//! - every handler carries a `#[utoipa::path]` with its method, path, parameters, body and
//!   responses, and [`utoipa_axum::routes!`] registers the handler under exactly that method
//!   and path: the router is built from the operations, so a route cannot be served without
//!   being documented, nor documented without being served;
//! - request and response bodies are the wire types of [`crate::wire`], which derive
//!   `ToSchema`; it reads their serde attributes, so the documented properties are the
//!   serialized ones, with the types' doc comments as descriptions. Bodies made from types
//!   of other crates (a stored record, a connection test's report) are wire types converted
//!   from them, so what is documented is what is serialized.
//!
//! Error responses are shared components (`#/components/responses/NotFound`, …), all with
//! the [`ErrorBody`] schema.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::ErrorBody;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The name of the bearer-token security scheme every operation requires.
pub const BEARER: &str = "bearer";

/// The document's root: title, description, tags, the security scheme and the shared error
/// responses. The operations are added by the routers ([`super::router`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Courier control API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Courier delivers the result files of finished jobs into customers' S3 \
buckets (AWS S3 or any S3-compatible store).

Customers manage their **delivery destinations** (bucket, region, credentials, path prefix, \
file format, compression) and test their connection; upstream jobs announce **completed jobs**, \
which Courier queues and delivers, recording every attempt.

Every operation needs `Authorization: Bearer <token>`. Each token belongs to one tenant, and a \
tenant sees only its own destinations and deliveries: another tenant's id reads as 404.

Every refusal is a 4xx or 503 whose body is `{\"error\": {\"code\", \"message\", \"fields\": \
[{\"field\", \"message\"}]}}`; `fields` names each field at fault of a `VALIDATION_FAILED` \
request, and all of them are reported at once.

Ids are a type prefix and a ULID (`dst_…`, `dlv_…`). Lists return a page of `items` and a \
`nextCursor` to pass as `cursor` (null on the last page); `limit` is 1 to 500 (default 50). \
Unknown query parameters and unknown body fields are refused."
    ),
    modifiers(&BearerAuth),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            DestinationBusy,
            NotRetryable,
            KeyInUse,
            TooManyRequests,
            PayloadTooLarge,
            ValidationFailed,
            Unavailable
        )
    ),
    tags(
        (name = "destinations", description = "A customer's delivery destinations: where, in which format, with which credentials."),
        (name = "deliveries", description = "Completed jobs announced for delivery, and the record of each delivery."),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from the operator's `COURIER_API_TOKENS`; each token \
                         belongs to exactly one tenant.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document: [`ApiDoc`] plus every operation of the routers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    super::routes().into_openapi()
}

/// `GET /api/v1/openapi.json`: `doc`, rendered once. No token needed.
pub(super) fn handler(
    doc: &utoipa::openapi::OpenApi,
) -> axum::routing::MethodRouter<super::AppState> {
    let json = axum::body::Bytes::from(
        doc.to_pretty_json()
            .expect("an OpenAPI document serializes"),
    );
    axum::routing::get(move || {
        let json = json.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json,
            )
        }
    })
}

// --- Error responses ----------------------------------------------------------------------

/// The body is not valid JSON (`MALFORMED_JSON`) or could not be read (`BAD_REQUEST`).
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "MALFORMED_JSON",
    "message": "the body is not valid JSON: key must be a string at line 1 column 2"
}}))]
pub struct BadRequest(pub ErrorBody);

/// No `Authorization: Bearer <token>` header, or a token that is not known (`UNAUTHORIZED`).
#[derive(Debug, ToResponse)]
#[response(
    headers(("WWW-Authenticate" = String, description = "`Bearer`")),
    example = json!({"error": {
        "code": "UNAUTHORIZED",
        "message": "a valid `Authorization: Bearer <token>` header is required"
    }})
)]
pub struct Unauthorized(pub ErrorBody);

/// No such destination or delivery for the caller's tenant (`NOT_FOUND`); another tenant's
/// ids read the same.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "NOT_FOUND",
    "message": "destination `dst_01JXQ5V3K8M2N7P4R6S9T0W1XY` does not exist"
}}))]
pub struct NotFound(pub ErrorBody);

/// Deliveries to this destination are still waiting (`DESTINATION_HAS_PENDING_DELIVERIES`):
/// delete again with `?force=true` to fail them, or wait until they are delivered.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "DESTINATION_HAS_PENDING_DELIVERIES",
    "message": "3 deliveries to this destination are still waiting; delete again with ?force=true to fail them, or wait until they are delivered"
}}))]
pub struct DestinationBusy(pub ErrorBody);

/// Only a `FAILED` delivery can be retried (`NOT_FAILED`), and only while its task is still
/// kept (`TASK_EXPIRED`: enqueue the job again).
#[derive(Debug, ToResponse)]
#[response(examples(
    ("NOT_FAILED" = (value = json!({"error": {
        "code": "NOT_FAILED",
        "message": "only a FAILED delivery can be retried; this one is DELIVERED"
    }}))),
    ("TASK_EXPIRED" = (value = json!({"error": {
        "code": "TASK_EXPIRED",
        "message": "the task of this delivery is no longer kept; enqueue the job again"
    }}))),
))]
pub struct NotRetryable(pub ErrorBody);

/// An earlier request with the same `Idempotency-Key` is still being queued
/// (`IDEMPOTENCY_KEY_IN_USE`): retry in a moment with the same key.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "IDEMPOTENCY_KEY_IN_USE",
    "message": "a request with this Idempotency-Key is still being queued; retry in a moment"
}}))]
pub struct KeyInUse(pub ErrorBody);

/// Over one of the tenant's quotas (`QUOTA_EXCEEDED`: destinations, waiting deliveries) or
/// rate limits (`RATE_LIMITED`: connection tests per minute); `limit` names it. Nothing was
/// saved. The `Retry-After` header says how many seconds to wait: the rest of the window
/// for a rate limit, a minute for a quota (which frees as deliveries finish or destinations
/// are deleted).
#[derive(Debug, ToResponse)]
#[response(
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    examples(
        ("QUOTA_EXCEEDED" = (value = json!({"error": {
            "code": "QUOTA_EXCEEDED",
            "message": "100000 deliveries of this tenant are waiting, the most it may have (100000); retry once some are delivered",
            "limit": "waitingDeliveriesPerTenant"
        }}))),
        ("RATE_LIMITED" = (value = json!({"error": {
            "code": "RATE_LIMITED",
            "message": "this tenant started 10 connection tests in the last minute, the most it may; retry in 42 s",
            "limit": "connectionTestsPerMinute"
        }}))),
    )
)]
pub struct TooManyRequests(pub ErrorBody);

/// The body is larger than the API accepts (`PAYLOAD_TOO_LARGE`; the operator's
/// `COURIER_API_MAX_BODY_BYTES`, 8 MiB by default).
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "PAYLOAD_TOO_LARGE",
    "message": "Failed to buffer the request body: length limit exceeded"
}}))]
pub struct PayloadTooLarge(pub ErrorBody);

/// The request is well-formed JSON but invalid (`VALIDATION_FAILED`): a missing, unknown or
/// mistyped field, a value that breaks a rule, or a bad query parameter. `fields` names each
/// one.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "VALIDATION_FAILED",
    "message": "the request is invalid: s3.bucket: bucket `Bad_Bucket` is not a valid S3 bucket name: only lowercase letters, digits, `.` and `-` are allowed",
    "fields": [{
        "field": "s3.bucket",
        "message": "bucket `Bad_Bucket` is not a valid S3 bucket name: only lowercase letters, digits, `.` and `-` are allowed"
    }]
}}))]
pub struct ValidationFailed(pub ErrorBody);

/// Courier's storage is unavailable (`UNAVAILABLE`: Redis refuses writes or cannot be
/// reached; nothing was saved, retry later), or the delivery was queued but not
/// acknowledged by the replicas the operator asks for in time (`NOT_REPLICATED`; retry with
/// the same `Idempotency-Key`). Sent with `Retry-After: 5` (seconds).
#[derive(Debug, ToResponse)]
#[response(examples(
    ("UNAVAILABLE" = (value = json!({"error": {
        "code": "UNAVAILABLE",
        "message": "Courier's storage is unavailable; nothing was saved, retry later"
    }}))),
    ("NOT_REPLICATED" = (value = json!({"error": {
        "code": "NOT_REPLICATED",
        "message": "the delivery was queued but only 0 of 1 replicas acknowledged it in time; retry with the same Idempotency-Key"
    }}))),
))]
pub struct Unavailable(pub ErrorBody);
