//! `/api/v1/delivery-destinations`: customers' destinations.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use courier_core::destination::{
    Destination, DestinationRequest, DestinationStatus, DestinationType, EndpointUrl,
    is_private_address, mask_access_key_id,
};
use courier_core::{Compression, DestinationId, Format, ValidationErrors};
use serde::Serialize;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/delivery-destinations", post(create))
        .route("/delivery-destinations/{id}", get(read))
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
    /// `STATIC` (an access key pair) or `NONE` (unsigned requests).
    credentials: &'static str,
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
                credentials: if s3.credentials.is_some() {
                    "STATIC"
                } else {
                    "NONE"
                },
                access_key_id: s3
                    .credentials
                    .as_ref()
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
    let not_found = || ApiError::not_found("destination", &id);
    let parsed = DestinationId::parse(&id).map_err(|_| not_found())?;
    let dest = state
        .destinations
        .get(&tenant, &parsed)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(DestinationView::from(&dest)))
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
