//! `/api/v1/deliveries`: "job completed" announcements and delivery records.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, JobCompletedRequest};
use courier_core::{DeliveryId, ValidationErrors};
use serde::Serialize;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use crate::EnqueueError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/deliveries", post(create))
        .route("/deliveries/{id}", get(read))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    id: DeliveryId,
    status: DeliveryStatus,
}

async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ValidJson(req): ValidJson<JobCompletedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = req.validate().map_err(ApiError::invalid)?;
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

async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<DeliveryRecord>, ApiError> {
    let not_found = || ApiError::not_found("delivery", &id);
    let parsed = DeliveryId::parse(&id).map_err(|_| not_found())?;
    let record = state
        .records
        .get(&tenant, &parsed)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(record))
}
