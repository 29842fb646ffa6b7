//! `/api/v1/deliveries`: "job completed" announcements and delivery records. Each handler
//! parses, calls the [`crate::Service`] and renders; the rules are there.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use courier_core::DeliveryId;
use courier_core::DestinationId;
use courier_core::delivery::DeliveryStatus as CoreDeliveryStatus;
use courier_store::RecordFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::openapi::{
    BadRequest, KeyInUse, NotFound, NotRetryable, PayloadTooLarge, TooManyRequests, Unauthorized,
    Unavailable, ValidationFailed,
};
use super::query::Params;
use crate::service::IDEMPOTENCY_KEY;
use crate::wire::{
    DeliveryAccepted, DeliveryBody, DeliveryPage, DeliveryStatus, JobCompletedRequest,
};

/// The routes, each with its OpenAPI operation (see [`super::destinations::routes`]).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
        .routes(routes!(retry))
}

/// The `{id}` of a delivery route.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // only describes the parameter; handlers take `Path<String>`
struct DeliveryIdParam(
    /// The delivery's id (`dlv_` and a ULID). An id of another tenant reads as 404.
    #[param(example = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM")]
    String,
);

/// Announce a completed job
///
/// Validates the job and queues its delivery; answers only once Redis holds the task.
/// Columns come from `columns`, else from the first row's keys in order.
///
/// To a batched destination, the rows (inline only) are appended as NDJSON lines to its
/// open window instead, and the answer (once Redis holds them) is `BATCHED` with the
/// window; the window's object is delivered once it closes.
///
/// With an `Idempotency-Key` header, the same key from the same tenant within 24 hours
/// answers with the first delivery (header `Idempotent-Replayed: true`) and queues nothing;
/// the same key with a different body is refused with a 422 naming `Idempotency-Key`.
///
/// A tenant may have `COURIER_MAX_WAITING_PER_TENANT` deliveries waiting (not final yet;
/// 100,000 by default); one more gets 429 `QUOTA_EXCEEDED` and nothing is queued.
#[utoipa::path(
    post,
    path = "/deliveries",
    operation_id = "createDelivery",
    tag = "deliveries",
    request_body = JobCompletedRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters (a UUID); retries with the same key within 24 hours never queue a second delivery"),
    ),
    responses(
        (status = 202, description = "Queued (or, for a repeated Idempotency-Key, queued before)", body = DeliveryAccepted,
            headers(
                ("Location" = String, description = "The delivery's URL, `/api/v1/deliveries/{id}`"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when an earlier request with the same Idempotency-Key queued this delivery"),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = KeyInUse),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ValidationFailed),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    ValidJson(req): ValidJson<JobCompletedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid(courier_core::ValidationErrors::single(
                IDEMPOTENCY_KEY,
                "must be visible ASCII characters",
            ))
        })?),
    };
    let enqueued = state.service.enqueue(&tenant, req, key).await?;
    let record = &enqueued.record;
    let location = format!("/api/v1/deliveries/{}", record.id);
    let mut resp = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(DeliveryAccepted::from(record)),
    )
        .into_response();
    if enqueued.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Read a delivery record
///
/// Status, bucket, key, bytes, ETag, rows, every attempt and timings.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    operation_id = "getDelivery",
    tag = "deliveries",
    params(DeliveryIdParam),
    responses(
        (status = 200, description = "The delivery record", body = DeliveryBody),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<DeliveryBody>, ApiError> {
    Ok(Json(state.service.delivery(&tenant, &id).await?.into()))
}

/// List deliveries
///
/// `GET /deliveries?jobId=&destinationId=&status=&from=&to=&limit=&cursor=`: the caller's
/// tenant's delivery records, newest first; every filter given must match. A
/// `destinationId` that is not one of the tenant's destinations (another tenant's, or a
/// deleted one) is 404.
#[utoipa::path(
    get,
    path = "/deliveries",
    operation_id = "listDeliveries",
    tag = "deliveries",
    params(
        ("jobId" = Option<String>, Query, description = "Only this job's deliveries"),
        ("destinationId" = Option<String>, Query, description = "Only deliveries to this destination (`dst_…`)"),
        ("status" = Option<DeliveryStatus>, Query, description = "Only deliveries in this status"),
        ("from" = Option<DateTime<Utc>>, Query, description = "Only deliveries enqueued at or after this RFC 3339 time"),
        ("to" = Option<DateTime<Utc>>, Query, description = "Only deliveries enqueued before this RFC 3339 time"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500; default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of delivery records", body = DeliveryPage),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 422, response = ValidationFailed),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let mut params = Params::new(query);
    let time = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "must be an RFC 3339 timestamp such as 2026-06-07T10:00:00Z".to_owned())
    };
    let filter = RecordFilter {
        destination_id: params.take("destinationId", DestinationId::parse),
        job_id: params.take("jobId", |s| Ok(s.to_owned())),
        status: params.take("status", CoreDeliveryStatus::parse),
        from: params.take("from", time),
        to: params.take("to", time),
    };
    let limit = params.limit();
    let cursor = params.take("cursor", DeliveryId::parse);
    params.finish()?;
    let page = state
        .service
        .deliveries(&tenant, &filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(DeliveryPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Retry a failed delivery
///
/// Delivers a failed delivery again, from the task kept in the dead letters.
#[utoipa::path(
    post,
    path = "/deliveries/{id}/retry",
    operation_id = "retryDelivery",
    tag = "deliveries",
    params(DeliveryIdParam),
    responses(
        (status = 202, description = "Queued again", body = DeliveryAccepted),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = NotRetryable),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn retry(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let record = state.service.retry(&tenant, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryAccepted::from(&record))))
}
