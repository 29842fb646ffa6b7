//! `/api/v1/delivery-destinations`: customers' destinations.

use std::time::Duration;

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use courier_core::TenantId;
use courier_core::destination::{
    CredentialsMode, Destination, DestinationRequest, DestinationStatus, DestinationType,
    EndpointUrl, is_private_address, mask_access_key_id,
};
use courier_core::destination::{Secret, StaticCredentials};
use courier_core::format::{ColumnType, ColumnTypes, ParquetCompression};
use courier_core::{Compression, DestinationId, Format, ValidationErrors};
use courier_s3::probe::{ProbeReport, test_connection};
use courier_store::DestinationHealth;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::openapi::{
    BadRequest, DestinationBusy, NotFound, PayloadTooLarge, ProbeReportSchema, Unauthorized,
    Unavailable, ValidationFailed,
};
use super::query::Params;

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
/// saved destination. 200 either way; `ok` and each step say what happened.
#[utoipa::path(
    post,
    path = "/delivery-destinations/{id}/test",
    operation_id = "testDestination",
    tag = "destinations",
    params(DestinationIdParam),
    responses(
        (status = 200, description = "The test ran; `ok` says whether Courier can deliver", body = ProbeReportSchema),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn test_saved(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ProbeReport>, ApiError> {
    let dest = load(&state, &tenant, &id).await?;
    let report = test_connection(&dest.spec.s3, state.probe_timeout).await;
    tracing::info!(destination_id = %dest.id, ok = report.ok, "connection tested");
    if report.ok && state.health.get(&dest.id).await?.is_failing() {
        // The store accepts writes again: deliveries held while failing flow again.
        state.health.clear(&dest.id).await?;
        if dest.spec.status == DestinationStatus::Active {
            state.held.release(&dest.id).await?;
        }
    }
    Ok(Json(report))
}

/// Test a configuration before saving it
///
/// Runs the connection test on a configuration before it is saved; nothing is stored.
#[utoipa::path(
    post,
    path = "/delivery-destinations/test",
    operation_id = "testDestinationConfiguration",
    tag = "destinations",
    request_body = DestinationRequest,
    responses(
        (status = 200, description = "The test ran; `ok` says whether Courier can deliver", body = ProbeReportSchema),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = ValidationFailed),
    ),
    security(("bearer" = [])),
)]
async fn test_unsaved(
    State(state): State<AppState>,
    Tenant(_tenant): Tenant,
    ValidJson(req): ValidJson<DestinationRequest>,
) -> Result<Json<ProbeReport>, ApiError> {
    let spec = req.validate().map_err(ApiError::invalid)?;
    if let Some(url) = &spec.s3.endpoint_url {
        check_endpoint(url, state.allow_private_endpoints)
            .await
            .map_err(ApiError::invalid)?;
    }
    Ok(Json(test_connection(&spec.s3, state.probe_timeout).await))
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

/// A destination as the API shows it: no secret, the access key id masked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    /// The destination's id.
    #[schema(value_type = String, example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    id: DestinationId,
    #[serde(rename = "type")]
    kind: DestinationType,
    /// A name for humans.
    name: String,
    s3: S3View,
    format: Format,
    compression: Compression,
    /// With format `PARQUET` only: the codec inside the file and declared column types.
    #[serde(skip_serializing_if = "Option::is_none")]
    parquet: Option<ParquetView>,
    status: DestinationStatus,
    /// Whether deliveries to it succeed; `FAILING` holds its deliveries.
    health: HealthView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A Parquet destination's settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ParquetView {
    compression: ParquetCompression,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = std::collections::BTreeMap<String, ColumnType>)]
    column_types: ColumnTypes,
}

/// Recent delivery health of a destination.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// `HEALTHY`, or `FAILING` after several permanent failures in a row: its deliveries are
    /// held (not failed) until the destination is updated or its connection test passes.
    #[schema(example = "HEALTHY")]
    state: &'static str,
    /// Permanent failures in a row since the last successful delivery.
    consecutive_failures: u32,
    /// Since when it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<DateTime<Utc>>,
    /// The store's error code of the last failure, e.g. `AccessDenied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error_message: Option<String>,
}

impl From<DestinationHealth> for HealthView {
    fn from(h: DestinationHealth) -> Self {
        Self {
            state: if h.is_failing() { "FAILING" } else { "HEALTHY" },
            consecutive_failures: h.consecutive_failures,
            failing_since: h.failing_since,
            last_error_code: h.last_error_code,
            last_error_message: h.last_error_message,
        }
    }
}

/// Where the files go. The secret access key is never shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct S3View {
    #[schema(example = "acme-mapping-results")]
    bucket: String,
    #[schema(example = "eu-west-1")]
    region: String,
    /// The endpoint of an S3-compatible store; absent for AWS S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    /// The key prefix of every delivered file: empty, or a folder path ending with `/`.
    #[schema(example = "incoming/")]
    path_prefix: String,
    /// `STATIC` (an access key pair), `NONE` (unsigned) or `DEFAULT_CHAIN` (the workers' AWS chain).
    credentials: CredentialsMode,
    /// The access key id, masked (`AKIA…MPLE`); present only with `STATIC` credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AKIA…MPLE")]
    access_key_id: Option<String>,
}

impl DestinationView {
    pub(crate) fn new(d: &Destination, health: DestinationHealth) -> Self {
        let s3 = &d.spec.s3;
        Self {
            id: d.id.clone(),
            kind: DestinationType::S3,
            name: d.spec.name.clone(),
            s3: S3View {
                bucket: s3.bucket.to_string(),
                region: s3.region.to_string(),
                endpoint_url: s3.endpoint_url.as_ref().map(ToString::to_string),
                path_prefix: s3.path_prefix.to_string(),
                credentials: s3.credentials.mode(),
                access_key_id: s3
                    .credentials
                    .as_static()
                    .map(|c| mask_access_key_id(&c.access_key_id)),
            },
            format: d.spec.format,
            compression: d.spec.compression,
            parquet: (d.spec.format == Format::Parquet).then(|| ParquetView {
                compression: d.spec.parquet.compression,
                column_types: d.spec.parquet.column_types.clone(),
            }),
            status: d.spec.status,
            health: health.into(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// The view of `dest` with its current health.
async fn view(state: &AppState, dest: &Destination) -> Result<DestinationView, ApiError> {
    let health = state.health.get(&dest.id).await?;
    Ok(DestinationView::new(dest, health))
}

/// Create a destination
///
/// Validates every field (all problems are reported at once, each under its field path)
/// and saves the destination; the secret is encrypted at rest and never returned.
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
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ValidJson(req): ValidJson<DestinationRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = req.validate().map_err(ApiError::invalid)?;
    if let Some(url) = &spec.s3.endpoint_url {
        check_endpoint(url, state.allow_private_endpoints)
            .await
            .map_err(ApiError::invalid)?;
    }
    let dest = state.destinations.create(&tenant, spec).await?;
    tracing::info!(destination_id = %dest.id, %tenant, "destination created");
    Ok((StatusCode::CREATED, Json(view(&state, &dest).await?)))
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
    let dest = load(&state, &tenant, &id).await?;
    Ok(Json(view(&state, &dest).await?))
}

/// `tenant`'s destination `id`, or the 404 a missing or foreign one gets.
pub async fn load(state: &AppState, tenant: &TenantId, id: &str) -> Result<Destination, ApiError> {
    let not_found = || ApiError::not_found("destination", id);
    let parsed = DestinationId::parse(id).map_err(|_| not_found())?;
    state
        .destinations
        .get(tenant, &parsed)
        .await?
        .ok_or_else(not_found)
}

/// A page of destinations.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPage {
    items: Vec<DestinationView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(value_type = Option<String>, required = true)]
    next_cursor: Option<DestinationId>,
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
        .destinations
        .list(&tenant, limit, cursor.as_ref())
        .await?;
    let mut views = Vec::with_capacity(items.len());
    for dest in &items {
        views.push(view(&state, dest).await?);
    }
    Ok(Json(DestinationPage {
        items: views,
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
    ValidJson(mut req): ValidJson<DestinationRequest>,
) -> Result<Json<DestinationView>, ApiError> {
    let old = load(&state, &tenant, &id).await?;
    if let Some(saved) = old.spec.s3.credentials.as_static() {
        keep_saved_secret(&mut req, saved);
    }
    let spec = req.validate().map_err(ApiError::invalid)?;
    if let Some(url) = &spec.s3.endpoint_url {
        check_endpoint(url, state.allow_private_endpoints)
            .await
            .map_err(ApiError::invalid)?;
    }
    let dest = state
        .destinations
        .update(&tenant, &old.id, spec)
        .await?
        .ok_or_else(|| ApiError::not_found("destination", &id))?;
    tracing::info!(destination_id = %dest.id, status = ?dest.spec.status, "destination updated");
    // An update is the customer's fix: forget past failures, and let deliveries held
    // while it was paused or failing flow again.
    state.health.clear(&dest.id).await?;
    if dest.spec.status == DestinationStatus::Active {
        state.held.release(&dest.id).await?;
    }
    Ok(Json(view(&state, &dest).await?))
}

fn keep_saved_secret(req: &mut DestinationRequest, saved: &StaticCredentials) {
    let s3 = &mut req.s3;
    let wants_static = s3.credentials.is_none_or(|m| m == CredentialsMode::Static);
    let same_key = s3
        .access_key_id
        .as_ref()
        .is_none_or(|id| id == &saved.access_key_id);
    if wants_static && s3.secret_access_key.is_none() && same_key {
        s3.access_key_id = Some(saved.access_key_id.clone());
        s3.secret_access_key = Some(Secret::new(saved.secret_access_key.expose()));
    }
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
    let dest = load(&state, &tenant, &id).await?;
    let waiting = state.records.pending_count(&dest.id).await?;
    if waiting > 0 && !force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "DESTINATION_HAS_PENDING_DELIVERIES",
            format!(
                "{waiting} deliveries to this destination are still waiting; delete again with \
                 ?force=true to fail them, or wait until they are delivered"
            ),
        ));
    }
    state.destinations.delete(&tenant, &dest.id).await?;
    // Held deliveries go back to the queue, where workers fail them as DestinationNotFound.
    state.held.release(&dest.id).await?;
    tracing::info!(destination_id = %dest.id, force, waiting, "destination deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses endpoints that resolve to loopback, private or link-local addresses unless
/// `allow_private` is set, so the API can't be used to probe internal services.
pub async fn check_endpoint(
    url: &EndpointUrl,
    allow_private: bool,
) -> Result<(), ValidationErrors> {
    if allow_private {
        return Ok(());
    }
    let field = "s3.endpointUrl";
    let host = url.host();
    let addrs: Vec<std::net::IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let lookup = tokio::net::lookup_host((host.as_str(), url.port_or_default()));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                _ => {
                    return Err(ValidationErrors::single(
                        field,
                        format!("host `{host}` does not resolve"),
                    ));
                }
            }
        }
    };
    if addrs.iter().any(|ip| is_private_address(*ip)) {
        return Err(ValidationErrors::single(
            field,
            format!(
                "`{host}` is a loopback, private or link-local address; endpoints must be \
                 reachable on the public internet (operators can allow private endpoints \
                 with COURIER_ALLOW_PRIVATE_ENDPOINTS=true)"
            ),
        ));
    }
    Ok(())
}
