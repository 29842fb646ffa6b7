//! `/api/v1/deliveries`: "job completed" announcements and delivery records.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, JobCompletedRequest};
use courier_core::{DeliveryId, ValidationErrors};
use courier_core::{DestinationId, TenantId};
use courier_store::RecordFilter;
use serde::Serialize;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::json::ValidJson;
use super::query::Params;
use crate::EnqueueError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/deliveries", post(create).get(list))
        .route("/deliveries/{id}", get(read))
        .route("/deliveries/{id}/retry", post(retry))
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    items: Vec<DeliveryRecord>,
    next_cursor: Option<String>,
}

/// `GET /deliveries?jobId=&destinationId=&status=&from=&to=&limit=&cursor=`
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

/// Delivers a failed delivery again, from the task kept in the dead letters.
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
