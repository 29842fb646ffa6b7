//! Settings every subcommand shares, and the shutdown signal.

use clap::Args;
use courier_store::{Keys, SecretCipher};
use tokio_util::sync::CancellationToken;

/// Where the fleet's state lives.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// The Redis the fleet shares.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    /// Prefix of every Redis key Courier writes; deployments sharing a Redis need distinct ones.
    #[arg(long, env = "COURIER_NAMESPACE", default_value = "courier")]
    pub namespace: String,
    /// Find the primary through these Sentinels (comma-separated `host:port`) instead of
    /// `REDIS_URL`'s host, and find the new one after a failover. `REDIS_URL` still gives the
    /// database number and credentials.
    #[arg(long, env = "COURIER_REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// The name the Sentinels monitor the primary under (required with the Sentinels).
    #[arg(long, env = "COURIER_REDIS_SENTINEL_SERVICE")]
    pub redis_sentinel_service: Option<String>,
}

impl RedisArgs {
    pub fn keys(&self) -> Keys {
        Keys::new(self.namespace.clone())
    }

    pub fn target(&self) -> anyhow::Result<courier_store::RedisTarget> {
        courier_store::RedisTarget::from_settings(
            &self.redis_url,
            self.redis_sentinels.as_deref(),
            self.redis_sentinel_service.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }

    pub async fn connect(&self) -> anyhow::Result<courier_store::RedisConn> {
        use anyhow::Context as _;
        let target = self.target()?;
        courier_store::RedisConn::connect(&target)
            .await
            .with_context(|| format!("connecting to Redis ({})", target.describe()))
    }
}

/// Acknowledged means replicated, when asked: an enqueue answers only once this many
/// replicas hold the delivery (Redis `WAIT`).
#[derive(Debug, Clone, Args)]
pub struct ReplicaArgs {
    /// Replicas that must acknowledge a delivery before it is accepted (0: the primary's
    /// word is enough). With Sentinel, 1 means an accepted delivery survives a failover.
    #[arg(long, env = "COURIER_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long to wait for them, in milliseconds; then the answer is 503 `NOT_REPLICATED`
    /// (retry with the same Idempotency-Key).
    #[arg(long, env = "COURIER_REDIS_WAIT_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_wait_timeout_ms: u64,
}

/// How many deliveries one tenant may have waiting, shared by `courier api` and
/// `courier enqueue` (both enqueue).
#[derive(Debug, Clone, Args)]
pub struct WaitingQuotaArgs {
    /// Deliveries one tenant may have waiting at once: queued, in progress, retrying or
    /// held (every one not final yet). One more is refused (429 `QUOTA_EXCEEDED`) and
    /// nothing is queued. 0: no limit.
    #[arg(long, env = "COURIER_MAX_WAITING_PER_TENANT", default_value_t = courier_producer::Quotas::DEFAULT_MAX_WAITING_PER_TENANT)]
    pub max_waiting_per_tenant: u64,
}

/// Per-tenant quotas and rate limits of the control API, counted in Redis so the whole
/// API fleet shares them.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Destinations one tenant may have; one more is refused (429 `QUOTA_EXCEEDED`) and
    /// nothing is saved. 0: no limit.
    #[arg(long, env = "COURIER_MAX_DESTINATIONS_PER_TENANT", default_value_t = courier_producer::Quotas::DEFAULT_MAX_DESTINATIONS_PER_TENANT)]
    pub max_destinations_per_tenant: u64,
    #[command(flatten)]
    pub waiting: WaitingQuotaArgs,
    /// Connection tests one tenant may start per minute (of saved destinations and unsaved
    /// configurations together); more get 429 `RATE_LIMITED` with `Retry-After`. 0: no limit.
    #[arg(long, env = "COURIER_CONNECTION_TESTS_PER_MINUTE", default_value_t = courier_producer::Quotas::DEFAULT_CONNECTION_TESTS_PER_MINUTE)]
    pub connection_tests_per_minute: u64,
}

impl QuotaArgs {
    pub fn quotas(&self) -> courier_producer::Quotas {
        courier_producer::Quotas {
            max_destinations_per_tenant: self.max_destinations_per_tenant,
            max_waiting_per_tenant: self.waiting.max_waiting_per_tenant,
            connection_tests_per_minute: self.connection_tests_per_minute,
        }
    }
}

/// The tenant boundary: where connections made for tenants may go (their destinations'
/// endpoints, their `rowsUrl` hosts: public unicast addresses, plus what the operator
/// allows, checked when the connection is made, on the addresses connected to), and which
/// tenants may use the fleet's own AWS identity.
#[derive(Debug, Clone, Args)]
pub struct BoundaryArgs {
    /// Let tenant traffic reach loopback, private and other special-purpose addresses too
    /// (local stores, tests). Off by default; prefer COURIER_EGRESS_ALLOW.
    #[arg(long, env = "COURIER_ALLOW_PRIVATE_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_endpoints: bool,
    /// Special-purpose addresses tenant traffic may reach anyway: comma-separated CIDRs
    /// (`10.20.0.0/16`) or addresses with a port (`127.0.0.1:3900`, `[::1]:3900`).
    #[arg(long, env = "COURIER_EGRESS_ALLOW", default_value = "")]
    pub egress_allow: String,
    /// Tenants whose destinations may use `DEFAULT_CHAIN` credentials, i.e. write with the
    /// fleet's own AWS identity (comma-separated tenant names). Unset: none.
    #[arg(long, env = "COURIER_DEFAULT_CHAIN_TENANTS", default_value = "")]
    pub default_chain_tenants: String,
}

impl BoundaryArgs {
    pub fn default_chain_tenants(&self) -> anyhow::Result<Vec<courier_core::TenantId>> {
        self.default_chain_tenants
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                courier_core::TenantId::parse(t)
                    .map_err(|e| anyhow::anyhow!("COURIER_DEFAULT_CHAIN_TENANTS: `{t}`: {e}"))
            })
            .collect()
    }

    pub fn policy(&self) -> anyhow::Result<std::sync::Arc<courier_egress::EgressPolicy>> {
        courier_egress::EgressPolicy::from_settings(
            &self.egress_allow,
            self.allow_private_endpoints,
        )
        .map(std::sync::Arc::new)
        .map_err(anyhow::Error::msg)
    }
}

/// The key that seals destination secrets.
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// Base64 of 32 bytes that encrypts destination secrets at rest (`openssl rand -base64 32`).
    #[arg(
        long = "secret-key",
        env = "COURIER_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: String,
    /// Older keys (comma-separated base64) that still open secrets sealed with them but seal
    /// nothing: set them while rotating, run `courier secrets rotate`, then remove them.
    #[arg(
        long = "previous-secret-keys",
        env = "COURIER_PREVIOUS_SECRET_KEYS",
        hide_env_values = true,
        default_value = ""
    )]
    pub previous_secret_keys: String,
}

impl SecretArgs {
    pub fn cipher(&self) -> anyhow::Result<SecretCipher> {
        SecretCipher::from_base64(&self.secret_key)
            .and_then(|c| c.with_previous(&self.previous_secret_keys))
            .map_err(anyhow::Error::msg)
    }

    /// Refuses to go on when the fleet's saved destinations need a key this process lacks:
    /// better not to start than to fail every delivery it takes.
    pub async fn check_opens(
        &self,
        conn: &courier_store::RedisConn,
        keys: &Keys,
    ) -> anyhow::Result<SecretCipher> {
        let cipher = self.cipher()?;
        let store =
            courier_store::DestinationStore::new(conn.clone(), keys.clone(), Some(cipher.clone()));
        let found = store.sealing_keys().await?;
        anyhow::ensure!(
            found.missing.is_empty() && found.unopenable_legacy == 0,
            "COURIER_SECRET_KEY (key {}) cannot open the fleet's destinations: {} sealed with \
             key(s) {} that neither it nor COURIER_PREVIOUS_SECRET_KEYS holds{}. Start with the \
             key the fleet uses (or add the old one to COURIER_PREVIOUS_SECRET_KEYS and run \
             `courier secrets rotate`).",
            cipher.key_id(),
            found.sealed,
            if found.missing.is_empty() {
                "-".to_owned()
            } else {
                found.missing.join(", ")
            },
            if found.unopenable_legacy > 0 {
                format!(
                    "; {} secrets sealed before key ids existed open with none of its keys",
                    found.unopenable_legacy
                )
            } else {
                String::new()
            },
        );
        Ok(cipher)
    }
}

/// The fleet's staging store: where big results are staged (`courier enqueue --stage`)
/// and where workers read `s3://` row references from.
#[derive(Debug, Clone, Args)]
pub struct StagingArgs {
    /// The staging bucket. Workers read `s3://` row references only from this bucket, so
    /// that a delivery cannot make the fleet read anything else its credentials can.
    #[arg(long, env = "COURIER_STAGING_BUCKET")]
    pub staging_bucket: Option<String>,
    /// The staging store's endpoint (none: AWS S3).
    #[arg(long, env = "COURIER_STAGING_ENDPOINT")]
    pub staging_endpoint: Option<String>,
    #[arg(long, env = "COURIER_STAGING_REGION", default_value = "us-east-1")]
    pub staging_region: String,
    /// With the secret, static keys for the staging store (without: the AWS default chain).
    #[arg(long, env = "COURIER_STAGING_ACCESS_KEY_ID", hide_env_values = true)]
    pub staging_access_key_id: Option<String>,
    #[arg(
        long,
        env = "COURIER_STAGING_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub staging_secret_access_key: Option<String>,
}

impl StagingArgs {
    /// A client for the staging store.
    pub async fn client(&self, timeouts: courier_s3::S3Timeouts) -> aws_sdk_s3::Client {
        use courier_core::destination::{Credentials, Secret, StaticCredentials};
        let credentials = match (&self.staging_access_key_id, &self.staging_secret_access_key) {
            (Some(id), Some(secret)) => Credentials::Static(StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: Secret::new(secret.clone()),
            }),
            _ => Credentials::DefaultChain,
        };
        courier_s3::client::client_for(
            &self.staging_region,
            self.staging_endpoint.as_deref(),
            &credentials,
            timeouts,
            // The fleet's own store, set by the operator: no tenant policy applies.
            None,
            "courier-staging",
        )
        .await
    }
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
