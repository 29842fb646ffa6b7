//! `/api/v1/batches`: the objects of a batched destination. The handler parses, calls the
//! [`crate::Service`] and renders.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use courier_core::{DestinationId, ValidationErrors};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::openapi::{NotFound, Unauthorized, Unavailable, ValidationFailed};
use super::query::Params;
use crate::wire::BatchPage;

/// The routes, each with its OpenAPI operation (see [`super::destinations::routes`]).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// List a batched destination's objects
///
/// `GET /batches?destinationId=&limit=&cursor=`: the objects a batched destination's
/// windows were delivered in, newest window first: key, window, rows, deliveries, bytes,
/// ETag, MD5, status and tries. Each delivery record's `batch.id` names its object. A
/// `destinationId` that is not one of the tenant's destinations is 404.
#[utoipa::path(
    get,
    path = "/batches",
    operation_id = "listBatches",
    tag = "deliveries",
    params(
        ("destinationId" = String, Query, description = "The batched destination (`dst_…`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500; default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of batch objects", body = BatchPage),
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
) -> Result<Json<BatchPage>, ApiError> {
    let mut params = Params::new(query);
    let destination = params.require("destinationId", DestinationId::parse);
    let limit = params.limit();
    let cursor = params.take("cursor", |s| {
        s.parse::<u64>()
            .map_err(|_| "must be the nextCursor of the previous page".to_owned())
    });
    params.finish()?;
    // `finish` already refused a missing or unparsable `destinationId`.
    let destination = destination.ok_or_else(|| {
        ApiError::invalid(ValidationErrors::single("destinationId", "is required"))
    })?;
    let page = state
        .service
        .batches(&tenant, &destination, limit, cursor)
        .await?;
    Ok(Json(BatchPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
