//! `/api/v1/delivery-destinations`: customers' destinations. Each handler parses, calls the
//! [`crate::Service`] and renders; the rules are there.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use courier_core::DestinationId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::openapi::{
    BadRequest, DestinationBusy, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
    Unavailable, ValidationFailed,
};
use super::query::Params;
use crate::service::DestinationWithHealth;
use crate::wire::{DestinationPage, DestinationRequest, DestinationView, ProbeReport};

/// The routes, each with its OpenAPI operation: `routes!` registers a handler under the
/// method and path of its `#[utoipa::path]`, so the document cannot drift from the router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(test_unsaved))
        .routes(routes!(test_saved))
}

/// Test a saved destination's connection
///
/// Runs the connection test (HeadBucket, PutObject probe, DeleteObject probe) against a
/// saved destination. 200 either way; `ok` and each step say what happened. A passing
/// test of a failing destination releases the deliveries it held. Each tenant may start
/// `COURIER_CONNECTION_TESTS_PER_MINUTE` tests a minute (10 by default); more get 429.
#[utoipa::path(
    post,
    path = "/delivery-destinations/{id}/test",
    operation_id = "testDestination",
    tag = "destinations",
    params(DestinationIdParam),
    responses(
        (status = 200, description = "The test ran; `ok` says whether Courier can deliver", body = ProbeReport),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn test_saved(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ProbeReport>, ApiError> {
    let report = state.service.test_saved_destination(&tenant, &id).await?;
    Ok(Json(report.into()))
}

/// Test a configuration before saving it
///
/// Runs the connection test on a configuration before it is saved; nothing is stored.
/// Counts toward the tenant's connection tests per minute, like a saved destination's.
#[utoipa::path(
    post,
    path = "/delivery-destinations/test",
    operation_id = "testDestinationConfiguration",
    tag = "destinations",
    request_body = DestinationRequest,
    responses(
        (status = 200, description = "The test ran; `ok` says whether Courier can deliver", body = ProbeReport),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ValidationFailed),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn test_unsaved(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ValidJson(req): ValidJson<DestinationRequest>,
) -> Result<Json<ProbeReport>, ApiError> {
    let report = state.service.test_configuration(&tenant, req).await?;
    Ok(Json(report.into()))
}

/// The `{id}` of a destination route.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // only describes the parameter; handlers take `Path<String>`
struct DestinationIdParam(
    /// The destination's id (`dst_` and a ULID). An id of another tenant reads as 404.
    #[param(example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    String,
);

fn view(d: DestinationWithHealth) -> DestinationView {
    DestinationView::new(&d.destination, d.health, &d.external_id)
}

/// Create a destination
///
/// Validates every field (all problems are reported at once, each under its field path)
/// and saves the destination; the secret is encrypted at rest and never returned. A tenant
/// may have `COURIER_MAX_DESTINATIONS_PER_TENANT` destinations (100 by default); one more
/// gets 429 `QUOTA_EXCEEDED` and nothing is saved.
#[utoipa::path(
    post,
    path = "/delivery-destinations",
    operation_id = "createDestination",
    tag = "destinations",
    request_body = DestinationRequest,
    responses(
        (status = 201, description = "Created", body = DestinationView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
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
    ValidJson(req): ValidJson<DestinationRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let dest = state.service.create_destination(&tenant, req).await?;
    let shown = state.service.with_health(dest).await?;
    Ok((StatusCode::CREATED, Json(view(shown))))
}

/// Read a destination
#[utoipa::path(
    get,
    path = "/delivery-destinations/{id}",
    operation_id = "getDestination",
    tag = "destinations",
    params(DestinationIdParam),
    responses(
        (status = 200, description = "The destination", body = DestinationView),
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
) -> Result<Json<DestinationView>, ApiError> {
    let dest = state.service.destination(&tenant, &id).await?;
    Ok(Json(view(state.service.with_health(dest).await?)))
}

/// List destinations
///
/// The caller's tenant's destinations, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/delivery-destinations",
    operation_id = "listDestinations",
    tag = "destinations",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500; default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of destinations", body = DestinationPage),
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
) -> Result<Json<DestinationPage>, ApiError> {
    let mut params = Params::new(query);
    let limit = params.limit();
    let cursor = params.take("cursor", DestinationId::parse);
    params.finish()?;
    let (items, next_cursor) = state
        .service
        .destinations(&tenant, limit, cursor.as_ref())
        .await?;
    Ok(Json(DestinationPage {
        items: items.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// Replace a destination's configuration
///
/// Replaces a destination's configuration. The secret is write-only, so a body that
/// leaves `secretAccessKey` out keeps the saved one as long as the access key id is
/// unchanged (or left out too); rotating keys means sending both. Setting `status` back to
/// `ACTIVE` releases the deliveries held while it was `PAUSED`.
#[utoipa::path(
    put,
    path = "/delivery-destinations/{id}",
    operation_id = "updateDestination",
    tag = "destinations",
    params(DestinationIdParam),
    request_body = DestinationRequest,
    responses(
        (status = 200, description = "The destination as saved", body = DestinationView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ValidationFailed),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<DestinationRequest>,
) -> Result<Json<DestinationView>, ApiError> {
    let dest = state.service.update_destination(&tenant, &id, req).await?;
    Ok(Json(view(state.service.with_health(dest).await?)))
}

/// Delete a destination
///
/// Deletes a destination. With deliveries still waiting it is refused (409) unless
/// `?force=true`, which fails those deliveries (they are dead-lettered, never dropped).
#[utoipa::path(
    delete,
    path = "/delivery-destinations/{id}",
    operation_id = "deleteDestination",
    tag = "destinations",
    params(
        DestinationIdParam,
        ("force" = Option<bool>, Query, description = "`true` deletes even with deliveries still waiting, failing them; default `false`"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = DestinationBusy),
        (status = 422, response = ValidationFailed),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn remove(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let mut params = Params::new(query);
    let force = params
        .take("force", |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".into()),
        })
        .unwrap_or(false);
    params.finish()?;
    state
        .service
        .delete_destination(&tenant, &id, force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
