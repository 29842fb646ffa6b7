//! The control API: JSON over HTTP with bearer tokens, one tenant per token.
//!
//! | route | module |
//! | --- | --- |
//! | `/api/v1/delivery-destinations[/{id}]` | [`destinations`] |
//! | `/api/v1/deliveries[/{id}]` | [`deliveries`] |
//! | `/api/v1/tenant` | [`tenant`] |
//! | `/api/v1/batches` | [`batches`] |
//! | `/api/v1/openapi.json` (no token) | [`openapi`] |
//!
//! Every refusal is a 4xx whose JSON body names the field ([`error::ApiError`]).
//!
//! Handlers parse and render: they read the request into a wire type ([`crate::wire`]),
//! call the [`Service`], which holds every rule, and show its answer as a wire type.

pub mod auth;
pub mod batches;
pub mod deliveries;
pub mod destinations;
pub mod error;
pub mod json;
pub mod openapi;
pub mod query;
pub mod tenant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Tokens;
use error::ApiError;

use crate::Service;

/// Default largest request body: 8 MiB of inline rows.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What every handler shares: who may call, and the service that decides.
#[derive(Debug, Clone)]
pub struct AppState {
    pub tokens: Tokens,
    pub service: Service,
}

/// Every documented route with its OpenAPI operation; the document and the router both
/// come from here ([`openapi`]).
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).nest(
        "/api/v1",
        destinations::routes()
            .merge(deliveries::routes())
            .merge(batches::routes())
            .merge(tenant::routes()),
    )
}

/// The whole API, and its OpenAPI document at `GET /api/v1/openapi.json`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, doc) = routes().split_for_parts();
    router
        .route(openapi::PATH, openapi::handler(&doc))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
