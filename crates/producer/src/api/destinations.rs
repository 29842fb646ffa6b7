//! `/api/v1/delivery-destinations`: customers' destinations.

use std::time::Duration;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use courier_core::TenantId;
use courier_core::destination::{
    CredentialsMode, Destination, DestinationRequest, DestinationStatus, DestinationType,
    EndpointUrl, is_private_address, mask_access_key_id,
};
use courier_core::destination::{Secret, StaticCredentials};
use courier_core::{Compression, DestinationId, Format, ValidationErrors};
use courier_s3::probe::{ProbeReport, test_connection};
use serde::Serialize;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::query::Params;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/delivery-destinations", post(create).get(list))
        .route(
            "/delivery-destinations/{id}",
            get(read).put(update).delete(remove),
        )
        .route("/delivery-destinations/test", post(test_unsaved))
        .route("/delivery-destinations/{id}/test", post(test_saved))
}

/// Runs the connection test (HeadBucket, PutObject probe, DeleteObject probe) against a
/// saved destination. 200 either way; `ok` and each step say what happened.
async fn test_saved(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<ProbeReport>, ApiError> {
    let dest = load(&state, &tenant, &id).await?;
    let report = test_connection(&dest.spec.s3, state.probe_timeout).await;
    tracing::info!(destination_id = %dest.id, ok = report.ok, "connection tested");
    Ok(Json(report))
}

/// Runs the connection test on a configuration before it is saved; nothing is stored.
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

/// A destination as the API shows it: no secret, the access key id masked.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    id: DestinationId,
    #[serde(rename = "type")]
    kind: DestinationType,
    name: String,
    s3: S3View,
    format: Format,
    compression: Compression,
    status: DestinationStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct S3View {
    bucket: String,
    region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    path_prefix: String,
    /// `STATIC` (an access key pair), `NONE` (unsigned) or `DEFAULT_CHAIN` (the workers' AWS chain).
    credentials: CredentialsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
}

impl From<&Destination> for DestinationView {
    fn from(d: &Destination) -> Self {
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
            status: d.spec.status,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

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
    Ok((StatusCode::CREATED, Json(DestinationView::from(&dest))))
}

async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<DestinationView>, ApiError> {
    let dest = load(&state, &tenant, &id).await?;
    Ok(Json(DestinationView::from(&dest)))
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPage {
    items: Vec<DestinationView>,
    next_cursor: Option<DestinationId>,
}

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
    Ok(Json(DestinationPage {
        items: items.iter().map(DestinationView::from).collect(),
        next_cursor,
    }))
}

/// Replaces a destination's configuration. The secret is write-only, so a body that
/// leaves `secretAccessKey` out keeps the saved one as long as the access key id is
/// unchanged (or left out too); rotating keys means sending both.
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
    if dest.spec.status == DestinationStatus::Active {
        // Deliveries held while it was paused flow again.
        state.held.release(&dest.id).await?;
    }
    Ok(Json(DestinationView::from(&dest)))
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

/// Deletes a destination. With deliveries still waiting it is refused (409) unless
/// `?force=true`, which fails those deliveries (they are dead-lettered, never dropped).
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
