//! `GET /api/v1/tenant`: what a customer needs before creating a `ROLE` destination.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::tenants::TenantSettings;

/// The caller's tenant, as a role's trust policy needs it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    /// The ExternalId Courier issued to your tenant (one per tenant, never changes): require
    /// it in the role's trust policy, `"Condition": {"StringEquals": {"sts:ExternalId": …}}`.
    #[schema(example = "Qm9bT4x7Kp2Lw8Zr5Nc1Vd6Hs3Jf0Yga")]
    pub external_id: String,
    /// The AWS principal Courier's workers assume roles with: the trust policy's
    /// `"Principal": {"AWS": …}`. Absent when the operator has not configured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "arn:aws:iam::111122223333:role/courier-fleet")]
    pub fleet_principal: Option<String>,
}

impl From<TenantSettings> for TenantView {
    fn from(t: TenantSettings) -> Self {
        Self {
            external_id: t.external_id.to_string(),
            fleet_principal: t.fleet_principal,
        }
    }
}
