//! Where the fleet may be sent: a destination's endpoint and a job's row reference must not
//! point it at internal services, and `s3://` rows must be in the fleet's staging bucket,
//! under the tenant's own `{tenant}/`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use courier_core::TenantId;
use courier_core::ValidationErrors;
use courier_core::delivery::{RowsLocation, RowsSource, RowsUrl};
use courier_core::destination::{Credentials, EndpointUrl};
use courier_egress::{CheckedResolver, EgressPolicy, find_refusal};

/// The operator's settings the rules depend on.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Where tenant traffic may go (`COURIER_EGRESS_ALLOW`, `COURIER_ALLOW_PRIVATE_ENDPOINTS`):
    /// checked here when a destination is saved or a job announced, for an early 422, and
    /// again by the workers and connection tests when they connect.
    pub egress: Arc<EgressPolicy>,
    /// `COURIER_STAGING_BUCKET`: the only bucket an `s3://` rowsUrl may name (the workers
    /// read no other); without it `s3://` references are refused.
    pub staging_bucket: Option<String>,
    /// How long each step of a connection test may take (`COURIER_PROBE_TIMEOUT_SECS`).
    pub probe_timeout: Duration,
    /// `COURIER_DEFAULT_CHAIN_TENANTS`: the tenants that may use the fleet's own AWS
    /// identity (`DEFAULT_CHAIN` credentials). Empty: none.
    pub default_chain_tenants: Vec<TenantId>,
    /// `COURIER_FLEET_PRINCIPAL`: the ARN of the fleet's AWS identity, shown to customers so
    /// they can name it in a role's trust policy (`GET /api/v1/tenant`). Not a secret.
    pub fleet_principal: Option<String>,
    /// `COURIER_REDIS_WAIT_REPLICAS`: an enqueue answers only once this many replicas hold
    /// the delivery (0: once the primary does).
    pub wait_replicas: u32,
    /// How long an enqueue waits for those replicas before it answers 503.
    pub wait_replicas_timeout: Duration,
    /// How much one tenant may hold and do (destinations, waiting deliveries, connection
    /// tests), so that no tenant fills Redis or takes enqueue down for the others.
    pub quotas: Quotas,
}

/// Per-tenant quotas and rate limits; 0 turns one off. Counted in Redis, so every API
/// process and every `courier enqueue` shares them. Over one the API answers 429 with
/// `Retry-After`, and nothing is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// `COURIER_MAX_DESTINATIONS_PER_TENANT`: destinations one tenant may have.
    pub max_destinations_per_tenant: u64,
    /// `COURIER_MAX_WAITING_PER_TENANT`: deliveries of one tenant that may wait at once
    /// (queued, in progress, retrying or held: every one not final yet).
    pub max_waiting_per_tenant: u64,
    /// `COURIER_CONNECTION_TESTS_PER_MINUTE`: connection tests one tenant may start in a
    /// minute (saved destinations and unsaved configurations alike).
    pub connection_tests_per_minute: u64,
}

/// The API's code of a full quota.
pub const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";
/// The API's code of a rate limit reached.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// The `limit` an error names, one per quota.
pub const DESTINATIONS_LIMIT: &str = "destinationsPerTenant";
pub const WAITING_LIMIT: &str = "waitingDeliveriesPerTenant";
pub const CONNECTION_TESTS_LIMIT: &str = "connectionTestsPerMinute";
/// `Retry-After` of a full quota: it frees when deliveries finish or destinations are
/// deleted, which no clock tells; a minute keeps well-behaved clients from hammering.
pub const QUOTA_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The window of `COURIER_CONNECTION_TESTS_PER_MINUTE`.
pub const CONNECTION_TEST_WINDOW: Duration = Duration::from_secs(60);

impl Quotas {
    pub const DEFAULT_MAX_DESTINATIONS_PER_TENANT: u64 = 100;
    pub const DEFAULT_MAX_WAITING_PER_TENANT: u64 = 100_000;
    pub const DEFAULT_CONNECTION_TESTS_PER_MINUTE: u64 = 10;
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_destinations_per_tenant: Self::DEFAULT_MAX_DESTINATIONS_PER_TENANT,
            max_waiting_per_tenant: Self::DEFAULT_MAX_WAITING_PER_TENANT,
            connection_tests_per_minute: Self::DEFAULT_CONNECTION_TESTS_PER_MINUTE,
        }
    }
}

impl Default for Rules {
    /// The strict settings: no private endpoints, no staging bucket, 10 s per probe step,
    /// the default quotas.
    fn default() -> Self {
        Self {
            egress: Arc::new(EgressPolicy::public_only()),
            staging_bucket: None,
            default_chain_tenants: Vec::new(),
            fleet_principal: None,
            probe_timeout: Duration::from_secs(10),
            wait_replicas: 0,
            wait_replicas_timeout: Duration::from_secs(2),
            quotas: Quotas::default(),
        }
    }
}

/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Rules {
    /// Refuses an endpoint that resolves to an address the egress policy refuses (loopback,
    /// private, link-local, …); the error names `s3.endpointUrl`.
    pub async fn check_endpoint(&self, url: &EndpointUrl) -> Result<(), ValidationErrors> {
        self.check_host(url, "s3.endpointUrl").await
    }

    /// Refuses `DEFAULT_CHAIN` credentials (the fleet's own AWS identity) to a tenant the
    /// operator has not named; the error names `s3.credentials`.
    pub fn check_credentials(
        &self,
        tenant: &TenantId,
        credentials: &Credentials,
    ) -> Result<(), ValidationErrors> {
        credentials
            .lent_to(tenant, &self.default_chain_tenants)
            .map_err(|m| ValidationErrors::single("s3.credentials", m))
    }

    /// Checks where the workers would read `tenant`'s rows from: `s3://` rows only from
    /// under `{tenant}/` in the staging bucket ([`RowsLocation::refusal_for`], which the
    /// workers ask again), http(s) rows only from public hosts. Inline rows pass.
    pub async fn check_rows(
        &self,
        tenant: &TenantId,
        rows: &RowsSource,
    ) -> Result<(), ValidationErrors> {
        match rows {
            RowsSource::Inline { .. } => Ok(()),
            RowsSource::Url(url) => self.check_rows_url(tenant, url).await,
        }
    }

    async fn check_rows_url(
        &self,
        tenant: &TenantId,
        url: &RowsUrl,
    ) -> Result<(), ValidationErrors> {
        let field = "rowsUrl";
        let invalid = |m: String| ValidationErrors::single(field, m);
        match url.location().map_err(invalid)? {
            // The workers read s3:// rows from the staging bucket only; say so now rather
            // than fail the delivery later.
            location @ RowsLocation::S3 { .. } => match &self.staging_bucket {
                Some(staging) => location
                    .refusal_for(staging, tenant)
                    .map_or(Ok(()), |r| Err(invalid(r.message))),
                None => Err(invalid(
                    "this deployment has no staging bucket (COURIER_STAGING_BUCKET) for s3:// \
                     rows; use an http(s) URL"
                        .to_owned(),
                )),
            },
            // The workers will fetch it: the endpoint rule keeps them off internal hosts.
            // Only scheme, host and port matter (a signed URL's query would not parse as an
            // endpoint).
            RowsLocation::Http(u) => {
                let (scheme, rest) = u.split_once("://").unwrap_or(("https", &u));
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                let endpoint =
                    EndpointUrl::parse(&format!("{scheme}://{authority}")).map_err(invalid)?;
                self.check_host(&endpoint, field).await
            }
        }
    }

    /// The same check the workers make when they connect ([`CheckedResolver`]), made now
    /// for an early 422.
    async fn check_host(&self, url: &EndpointUrl, field: &str) -> Result<(), ValidationErrors> {
        if self.egress.allows_everything() {
            return Ok(());
        }
        let host = url.host();
        let port = url.port_or_default();
        let refused =
            |r: &courier_egress::EgressRefused| ValidationErrors::single(field, r.to_string());
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return self
                .egress
                .check(&host, SocketAddr::new(ip, port))
                .map_err(|r| refused(&r));
        }
        let resolver = CheckedResolver::new(self.egress.clone(), port);
        let err = match tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&host)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => find_refusal(&e).map(refused),
            Err(_) => None,
        };
        Err(err.unwrap_or_else(|| {
            ValidationErrors::single(field, format!("host `{host}` does not resolve"))
        }))
    }
}

#[cfg(test)]
mod tests {
    use courier_core::rows::InlineRows;

    use super::*;

    fn url(s: &str) -> RowsSource {
        RowsSource::Url(RowsUrl::parse(s).unwrap())
    }

    fn staging() -> Rules {
        Rules {
            staging_bucket: Some("staging".into()),
            ..Rules::default()
        }
    }

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[tokio::test]
    async fn s3_rows_only_from_the_tenants_prefix_in_the_staging_bucket() {
        let rules = staging();
        assert!(
            rules
                .check_rows(&acme(), &url("s3://staging/acme/a.ndjson"))
                .await
                .is_ok()
        );
        let err = rules
            .check_rows(&acme(), &url("s3://secrets/acme/a.ndjson"))
            .await
            .unwrap_err();
        assert_eq!(err.0[0].field, "rowsUrl");
        assert!(err.0[0].message.contains("`secrets`"), "{err}");
        for other in [
            "s3://staging/acme2/a.ndjson",
            "s3://staging/acme/../acme2/a.ndjson",
            "s3://staging/a.ndjson",
        ] {
            let err = rules.check_rows(&acme(), &url(other)).await.unwrap_err();
            assert_eq!(err.0[0].field, "rowsUrl", "{other}");
            assert!(err.0[0].message.contains("under `acme/`"), "{err}");
        }
        let err = Rules::default()
            .check_rows(&acme(), &url("s3://staging/acme/a.ndjson"))
            .await
            .unwrap_err();
        assert!(err.0[0].message.contains("COURIER_STAGING_BUCKET"), "{err}");
    }

    #[tokio::test]
    async fn private_hosts_are_refused_unless_allowed() {
        let rules = staging();
        for u in [
            "http://127.0.0.1:9000/rows.ndjson",
            "http://[::1]/r.ndjson?sig=1",
            "http://169.254.169.254/latest",
        ] {
            let err = rules.check_rows(&acme(), &url(u)).await.unwrap_err();
            assert_eq!(err.0[0].field, "rowsUrl", "{u}");
        }
        let endpoint = EndpointUrl::parse("http://10.0.0.1:3900").unwrap();
        let err = rules.check_endpoint(&endpoint).await.unwrap_err();
        assert_eq!(err.0[0].field, "s3.endpointUrl");
        let open = Rules {
            egress: Arc::new(EgressPolicy::allow_everything()),
            ..staging()
        };
        let allowing_one = Rules {
            egress: Arc::new(EgressPolicy::from_settings("10.0.0.1:3900", false).unwrap()),
            ..staging()
        };
        assert!(allowing_one.check_endpoint(&endpoint).await.is_ok());
        let other_port = EndpointUrl::parse("http://10.0.0.1:3901").unwrap();
        let err = allowing_one.check_endpoint(&other_port).await.unwrap_err();
        assert!(err.0[0].message.contains("COURIER_EGRESS_ALLOW"), "{err}");
        assert!(open.check_endpoint(&endpoint).await.is_ok());
        assert!(
            open.check_rows(&acme(), &url("http://127.0.0.1:9000/rows.ndjson"))
                .await
                .is_ok()
        );
        let inline = RowsSource::Inline {
            rows: InlineRows::default(),
            count: 0,
        };
        assert!(Rules::default().check_rows(&acme(), &inline).await.is_ok());
    }
}
