//! `/api/v1/deliveries`: "job completed" announcements and delivery records.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, JobCompletedRequest};
use courier_core::{DeliveryId, ValidationErrors};
use courier_core::{DestinationId, TenantId};
use courier_store::RecordFilter;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::openapi::{
    BadRequest, NotFound, NotRetryable, PayloadTooLarge, Unauthorized, Unavailable,
    ValidationFailed,
};
use super::query::Params;
use crate::EnqueueError;

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

/// A delivery that was queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeliveryAccepted)]
struct Accepted {
    /// The delivery's id; `GET /api/v1/deliveries/{id}` follows it.
    #[schema(value_type = String, example = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM")]
    id: DeliveryId,
    /// `QUEUED`: the task is in the queue.
    status: DeliveryStatus,
}

/// Announce a completed job
///
/// Validates the job and queues its delivery; answers only once Redis holds the task.
/// Columns come from `columns`, else from the first row's keys in order.
#[utoipa::path(
    post,
    path = "/deliveries",
    operation_id = "createDelivery",
    tag = "deliveries",
    request_body = JobCompletedRequest,
    responses(
        (status = 202, description = "Queued", body = Accepted,
            headers(("Location" = String, description = "The delivery's URL, `/api/v1/deliveries/{id}`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ValidationFailed),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ValidJson(req): ValidJson<JobCompletedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = req.validate().map_err(ApiError::invalid)?;
    if let Some(url) = &job.rows_url {
        check_rows_url(url, &state).await?;
    }
    let record = state
        .producer
        .enqueue(&tenant, job)
        .await
        .map_err(|e| match e {
            EnqueueError::DestinationNotFound(id) => ApiError::invalid(ValidationErrors::single(
                "destinationId",
                format!("destination `{id}` does not exist"),
            )),
            EnqueueError::Store(e) => e.into(),
        })?;
    tracing::info!(delivery_id = %record.id, job_id = %record.job_id, destination_id = %record.destination_id, "delivery queued");
    let location = format!("/api/v1/deliveries/{}", record.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(Accepted {
            id: record.id,
            status: record.status,
        }),
    ))
}

/// Where the workers will read a `rowsUrl` from must be a place they may read.
async fn check_rows_url(
    url: &courier_core::delivery::RowsUrl,
    state: &AppState,
) -> Result<(), ApiError> {
    use courier_core::delivery::RowsLocation;
    let invalid = |m: String| ApiError::invalid(ValidationErrors::single("rowsUrl", m));
    match url.location() {
        // The workers read s3:// rows from the staging bucket only; say so now rather than
        // fail the delivery later.
        Ok(location @ RowsLocation::S3 { .. }) => match &state.staging_bucket {
            Some(staging) => location
                .outside_staging(staging)
                .map_or(Ok(()), |m| Err(invalid(m))),
            None => Err(invalid(
                "this deployment has no staging bucket (COURIER_STAGING_BUCKET) for s3:// rows; \
                 use an http(s) URL"
                    .to_owned(),
            )),
        },
        // The workers will fetch it: the same rule as endpoints keeps them off internal hosts.
        // Only scheme, host and port matter here (a signed URL's query would not parse as
        // an endpoint).
        Ok(RowsLocation::Http(u)) => {
            let (scheme, rest) = u.split_once("://").unwrap_or(("https", &u));
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let endpoint =
                courier_core::destination::EndpointUrl::parse(&format!("{scheme}://{authority}"))
                    .map_err(invalid)?;
            super::destinations::check_endpoint(&endpoint, state.allow_private_endpoints)
                .await
                .map_err(|mut e| {
                    for f in &mut e.0 {
                        f.field = "rowsUrl".into();
                    }
                    ApiError::invalid(e)
                })
        }
        // validate() already refused a rowsUrl that does not parse.
        Err(_) => Ok(()),
    }
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
        (status = 200, description = "The delivery record", body = DeliveryRecord),
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
) -> Result<Json<DeliveryRecord>, ApiError> {
    Ok(Json(load(&state, &tenant, &id).await?))
}

async fn load(state: &AppState, tenant: &TenantId, id: &str) -> Result<DeliveryRecord, ApiError> {
    let not_found = || ApiError::not_found("delivery", id);
    let parsed = DeliveryId::parse(id).map_err(|_| not_found())?;
    state
        .records
        .get(tenant, &parsed)
        .await?
        .ok_or_else(not_found)
}

/// A page of delivery records, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    items: Vec<DeliveryRecord>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// List deliveries
///
/// `GET /deliveries?jobId=&destinationId=&status=&from=&to=&limit=&cursor=`: the caller's
/// tenant's delivery records, newest first; every filter given must match.
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
        status: params.take("status", DeliveryStatus::parse),
        from: params.take("from", time),
        to: params.take("to", time),
    };
    let limit = params.limit();
    let cursor = params.take("cursor", DeliveryId::parse);
    params.finish()?;
    let page = state
        .records
        .list(&tenant, &filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(DeliveryPage {
        items: page.items,
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
        (status = 202, description = "Queued again", body = Accepted),
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
    let mut record = load(&state, &tenant, &id).await?;
    if record.status != DeliveryStatus::Failed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NOT_FAILED",
            format!(
                "only a FAILED delivery can be retried; this one is {}",
                serde_json::to_value(record.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        ));
    }
    let Some(letter) = state.dead.get(record.id.as_str()).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "TASK_EXPIRED",
            "the task of this delivery is no longer kept; enqueue the job again",
        ));
    };
    record.status = DeliveryStatus::Queued;
    record.updated_at = Utc::now();
    state.records.put(&record).await?;
    state.dead.replay(&letter).await?;
    tracing::info!(delivery_id = %record.id, "failed delivery queued again");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: record.id,
            status: record.status,
        }),
    ))
}
