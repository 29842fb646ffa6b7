//! `courier api`: the control API.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use courier_producer::api::{self, AppState, Tokens};
use courier_producer::{Rules, Service};
use courier_store::StatsReader;
use courier_store::queue::Liveness;

use crate::common::{BoundaryArgs, QuotaArgs, RedisArgs, ReplicaArgs, SecretArgs, shutdown_token};
use crate::observe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address the API listens on; it serves `/metrics` too.
    #[arg(long, env = "COURIER_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Comma-separated `token=tenant` pairs that may call the API.
    #[arg(long, env = "COURIER_API_TOKENS", hide_env_values = true)]
    tokens: String,
    #[command(flatten)]
    egress: BoundaryArgs,
    #[command(flatten)]
    replicas: ReplicaArgs,
    #[command(flatten)]
    quotas: QuotaArgs,
    /// Largest request body accepted, in bytes; larger gets 413.
    #[arg(long, env = "COURIER_API_MAX_BODY_BYTES", default_value_t = api::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Seconds each step of a connection test may take; a store that does not answer fails then.
    #[arg(long, env = "COURIER_PROBE_TIMEOUT_SECS", default_value_t = 10)]
    probe_timeout_secs: u64,
    /// The ARN of the fleet's AWS identity (the role or user the workers run as), shown to
    /// customers at `GET /api/v1/tenant` as `fleetPrincipal` for their roles' trust
    /// policies. Unset: not shown.
    #[arg(long, env = "COURIER_FLEET_PRINCIPAL")]
    fleet_principal: Option<String>,
    /// The fleet's staging bucket: the only bucket an `s3://` rowsUrl may name, as the
    /// workers read no other (without it, `s3://` references are refused).
    #[arg(long, env = "COURIER_STAGING_BUCKET")]
    staging_bucket: Option<String>,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    secret: SecretArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    observe::init_logging();
    let metrics = observe::install_metrics()?;
    courier_producer::telemetry::register();
    let tokens = Tokens::parse(&args.tokens).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!tokens.is_empty(), "COURIER_API_TOKENS names no token");
    let conn = args.redis.connect().await?;
    let keys = args.redis.keys();
    let cipher = args.secret.check_opens(&conn, &keys).await?;
    let rules = Rules {
        egress: args.egress.policy()?,
        default_chain_tenants: args.egress.default_chain_tenants()?,
        fleet_principal: args.fleet_principal,
        staging_bucket: args.staging_bucket,
        probe_timeout: Duration::from_secs(args.probe_timeout_secs.max(1)),
        wait_replicas: args.replicas.redis_wait_replicas,
        wait_replicas_timeout: Duration::from_millis(args.replicas.redis_wait_timeout_ms.max(1)),
        quotas: args.quotas.quotas(),
    };
    let state = AppState {
        tokens,
        service: Service::new(conn.clone(), keys.clone(), Some(cipher), rules),
    };
    observe::spawn_queue_stats(
        StatsReader::new(conn.clone(), keys.clone(), Liveness::default()),
        Duration::from_secs(2),
    );
    let app = api::router(state, args.max_body_bytes)
        .merge(observe::metrics_routes(metrics, conn.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "courier api listening");
    let shutdown = shutdown_token();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
