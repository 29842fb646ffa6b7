//! `/api/v1/tenant`: the caller's tenant, read before creating a `ROLE` destination.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Tenant;
use super::error::ApiError;
use super::openapi::{Unauthorized, Unavailable};
use crate::wire::TenantView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read))
}

/// Read your tenant's ExternalId
///
/// The ExternalId Courier issued to your tenant and the fleet's principal: write your
/// role's trust policy with them before you create a `ROLE` destination. The ExternalId is
/// made on first read and never changes.
#[utoipa::path(
    get,
    path = "/tenant",
    operation_id = "getTenant",
    tag = "destinations",
    responses(
        (status = 200, description = "Your tenant", body = TenantView),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(state.service.tenant(&tenant).await?.into()))
}
