//! A tenant's destinations: ownership, create, update, delete, connection tests.

use courier_core::destination::{
    CredentialsMode, Destination, DestinationSpec, ExternalId, Secret, StaticCredentials,
};
use courier_core::role::test_session_name;
use courier_core::{DestinationId, TenantId};
use courier_s3::probe::{ProbeReport, test_connection};
use courier_store::{DestinationHealth, RateDecision};

use super::{Service, ServiceError, rules};
use crate::wire::DestinationRequest;

/// A destination and its current delivery health, as the API shows them together.
#[derive(Debug, Clone)]
pub struct DestinationWithHealth {
    pub destination: Destination,
    pub health: DestinationHealth,
    /// The tenant's ExternalId, shown on every destination.
    pub external_id: ExternalId,
}

impl Service {
    /// `tenant`'s destination `id`. A malformed id, a missing one and another tenant's all
    /// read as [`ServiceError::NotFound`], so ids of other tenants cannot be probed.
    pub async fn destination(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Destination, ServiceError> {
        let not_found = || ServiceError::not_found("destination", id);
        let parsed = DestinationId::parse(id).map_err(|_| not_found())?;
        self.destinations
            .get(tenant, &parsed)
            .await?
            .ok_or_else(not_found)
    }

    /// `dest` with its current health.
    pub async fn with_health(
        &self,
        dest: Destination,
    ) -> Result<DestinationWithHealth, ServiceError> {
        let health = self.health.get(&dest.id).await?;
        let external_id = self.tenants.external_id(&dest.tenant).await?;
        Ok(DestinationWithHealth {
            destination: dest,
            health,
            external_id,
        })
    }

    /// A page of `tenant`'s destinations, oldest first, and the cursor of the next page.
    pub async fn destinations(
        &self,
        tenant: &TenantId,
        limit: usize,
        cursor: Option<&DestinationId>,
    ) -> Result<(Vec<DestinationWithHealth>, Option<DestinationId>), ServiceError> {
        let (items, next) = self.destinations.list(tenant, limit, cursor).await?;
        let mut shown = Vec::with_capacity(items.len());
        for dest in items {
            shown.push(self.with_health(dest).await?);
        }
        Ok((shown, next))
    }

    /// Validates `req` (every problem at once) and the endpoint rule; nothing is saved.
    async fn spec(
        &self,
        tenant: &TenantId,
        req: DestinationRequest,
    ) -> Result<DestinationSpec, ServiceError> {
        let external_id = self.tenants.external_id(tenant).await?;
        let spec = req.validate(&external_id).map_err(ServiceError::Invalid)?;
        self.rules
            .check_credentials(tenant, &spec.s3.credentials)
            .map_err(ServiceError::Invalid)?;
        if let Some(url) = &spec.s3.endpoint_url {
            self.rules
                .check_endpoint(url)
                .await
                .map_err(ServiceError::Invalid)?;
        }
        Ok(spec)
    }

    /// Saves a new destination for `tenant`; its secret is sealed at rest. A tenant with
    /// [`Quotas::max_destinations_per_tenant`](super::Quotas) destinations gets
    /// [`ServiceError::TooMany`] and nothing is saved (counted and saved in one script).
    pub async fn create_destination(
        &self,
        tenant: &TenantId,
        req: DestinationRequest,
    ) -> Result<Destination, ServiceError> {
        let spec = self.spec(tenant, req).await?;
        let limit = self.rules.quotas.max_destinations_per_tenant;
        let dest = match self.destinations.create_within(tenant, spec, limit).await? {
            Ok(dest) => dest,
            Err(full) => {
                tracing::info!(%tenant, destinations = full.used, limit, "destination quota full");
                return Err(ServiceError::TooMany {
                    code: rules::QUOTA_EXCEEDED,
                    limit: rules::DESTINATIONS_LIMIT,
                    message: format!(
                        "this tenant has {} destinations, the most it may have ({limit}); \
                         delete one first",
                        full.used
                    ),
                    retry_after: rules::QUOTA_RETRY_AFTER,
                });
            }
        };
        tracing::info!(destination_id = %dest.id, %tenant, "destination created");
        Ok(dest)
    }

    /// Replaces `tenant`'s destination `id`. The secret is write-only, so a request without
    /// `secretAccessKey` keeps the saved one while the key id is unchanged. An update is the
    /// customer's fix: past failures are forgotten and held deliveries flow if it is active.
    pub async fn update_destination(
        &self,
        tenant: &TenantId,
        id: &str,
        mut req: DestinationRequest,
    ) -> Result<Destination, ServiceError> {
        let old = self.destination(tenant, id).await?;
        if let Some(saved) = old.spec.s3.credentials.as_static() {
            keep_saved_secret(&mut req, saved);
        }
        let spec = self.spec(tenant, req).await?;
        let dest = self
            .destinations
            .update(tenant, &old.id, spec)
            .await?
            .ok_or_else(|| ServiceError::not_found("destination", id))?;
        tracing::info!(destination_id = %dest.id, status = ?dest.spec.status, "destination updated");
        self.recovered(&dest).await?;
        Ok(dest)
    }

    /// Deletes `tenant`'s destination `id`. While deliveries to it wait this is refused
    /// (`DESTINATION_HAS_PENDING_DELIVERIES`) unless `force`, which fails them into the dead
    /// letters.
    pub async fn delete_destination(
        &self,
        tenant: &TenantId,
        id: &str,
        force: bool,
    ) -> Result<(), ServiceError> {
        let dest = self.destination(tenant, id).await?;
        let waiting = self.records.pending_count(&dest.id).await?;
        if waiting > 0 && !force {
            return Err(ServiceError::Conflict {
                code: "DESTINATION_HAS_PENDING_DELIVERIES",
                message: format!(
                    "{waiting} deliveries to this destination are still waiting; delete again \
                     with ?force=true to fail them, or wait until they are delivered"
                ),
            });
        }
        self.destinations.delete(tenant, &dest.id).await?;
        self.deleted(&dest.id).await?;
        tracing::info!(destination_id = %dest.id, force, waiting, "destination deleted");
        Ok(())
    }

    /// The connection test of `tenant`'s saved destination `id` (see [`Self::test_destination`]).
    pub async fn test_saved_destination(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<ProbeReport, ServiceError> {
        let dest = self.destination(tenant, id).await?;
        self.take_connection_test(tenant).await?;
        self.test_destination(&dest).await
    }

    /// Counts one of `tenant`'s connection tests, or refuses it with
    /// [`ServiceError::TooMany`] (`RATE_LIMITED`, `Retry-After` the rest of the window)
    /// once [`Quotas::connection_tests_per_minute`](super::Quotas) were started in it.
    async fn take_connection_test(&self, tenant: &TenantId) -> Result<(), ServiceError> {
        let limit = self.rules.quotas.connection_tests_per_minute;
        if limit == 0 {
            return Ok(());
        }
        match self
            .rate
            .take_connection_test(tenant, limit, rules::CONNECTION_TEST_WINDOW)
            .await?
        {
            RateDecision::Allowed { .. } => Ok(()),
            RateDecision::Refused { retry_after } => {
                tracing::info!(%tenant, limit, "connection test rate-limited");
                Err(ServiceError::TooMany {
                    code: rules::RATE_LIMITED,
                    limit: rules::CONNECTION_TESTS_LIMIT,
                    message: format!(
                        "this tenant started {limit} connection tests in the last minute, \
                         the most it may; retry in {} s",
                        retry_after.as_secs_f64().ceil()
                    ),
                    retry_after,
                })
            }
        }
    }

    /// Runs the connection test of a saved destination. A passing test of a failing
    /// destination means the store accepts writes again: its held deliveries flow.
    pub async fn test_destination(&self, dest: &Destination) -> Result<ProbeReport, ServiceError> {
        self.rules
            .check_credentials(&dest.tenant, &dest.spec.s3.credentials)
            .map_err(ServiceError::Invalid)?;
        let report = test_connection(
            &dest.spec.s3,
            self.rules.probe_timeout,
            &self.rules.egress,
            &test_session_name(Some(&dest.id)),
        )
        .await;
        tracing::info!(destination_id = %dest.id, ok = report.ok, "connection tested");
        if report.ok && self.health.get(&dest.id).await?.is_failing() {
            self.recovered(dest).await?;
        }
        Ok(report)
    }

    /// The operator's view: any tenant's destination `id` (`courier destinations test`).
    pub async fn destination_of_any_tenant(
        &self,
        id: &DestinationId,
    ) -> Result<Destination, ServiceError> {
        self.destinations
            .get_any(id)
            .await?
            .ok_or_else(|| ServiceError::not_found("destination", id.as_str()))
    }

    /// The connection test of a configuration before it is saved; nothing is stored.
    pub async fn test_configuration(
        &self,
        tenant: &TenantId,
        req: DestinationRequest,
    ) -> Result<ProbeReport, ServiceError> {
        self.take_connection_test(tenant).await?;
        let spec = self.spec(tenant, req).await?;
        Ok(test_connection(
            &spec.s3,
            self.rules.probe_timeout,
            &self.rules.egress,
            &test_session_name(None),
        )
        .await)
    }
}

/// An update without `secretAccessKey` keeps the saved secret while the key id is the same
/// (or left out too); rotating keys means sending both.
fn keep_saved_secret(req: &mut DestinationRequest, saved: &StaticCredentials) {
    let s3 = &mut req.s3;
    let wants_static = s3
        .credentials
        .is_none_or(|m| CredentialsMode::from(m) == CredentialsMode::Static);
    let same_key = s3
        .access_key_id
        .as_ref()
        .is_none_or(|id| id == &saved.access_key_id);
    if wants_static && s3.secret_access_key.is_none() && same_key {
        s3.access_key_id = Some(saved.access_key_id.clone());
        s3.secret_access_key = Some(Secret::new(saved.secret_access_key.expose()));
    }
}
