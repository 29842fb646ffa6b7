//! Logs and metrics: `tracing` to stderr (JSON with `COURIER_LOG_FORMAT=json`), and a
//! Prometheus recorder whose text is served on `/metrics`.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use courier_store::RedisConn;
use courier_store::StatsReader;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Sets up logging once per process. `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_smithy_runtime=warn,aws_config=warn"));
    let json = std::env::var("COURIER_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Installs the Prometheus recorder and keeps its histograms fresh.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in courier_worker::telemetry::buckets() {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets)?;
    }
    let handle = builder.install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `/metrics`, `/healthz` (the process is alive) and `/readyz` (Redis answers), to merge
/// into a router or serve alone; fit for Kubernetes probes.
pub fn metrics_routes(handle: PrometheusHandle, conn: RedisConn) -> Router {
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let mut conn = conn.clone();
                async move {
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<String>(&mut conn);
                    match tokio::time::timeout(Duration::from_secs(2), ping).await {
                        Ok(Ok(_)) => (StatusCode::OK, "ready"),
                        _ => (StatusCode::SERVICE_UNAVAILABLE, "redis does not answer"),
                    }
                }
            }),
        )
}

/// Every `every`, reads the fleet-wide queue snapshot from Redis into gauges. Every
/// process reports the same values; aggregate them with `max()`, not `sum()`.
pub fn spawn_queue_stats(reader: StatsReader, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match reader.read().await {
                Ok(s) => {
                    for (state, v) in [
                        ("waiting", s.waiting),
                        ("scheduled", s.scheduled),
                        ("in_flight", s.in_flight),
                        ("held", s.held),
                        ("dead", s.dead),
                    ] {
                        metrics::gauge!("courier_queue_depth", "state" => state).set(v as f64);
                    }
                    metrics::gauge!("courier_queue_oldest_waiting_age_seconds")
                        .set(s.oldest_waiting_age.as_secs_f64());
                    metrics::gauge!("courier_workers_live").set(s.live_workers as f64);
                    metrics::gauge!("courier_destinations", "state" => "failing")
                        .set(s.failing_destinations as f64);
                    metrics::gauge!("courier_destinations", "state" => "paused")
                        .set(s.paused_destinations as f64);
                }
                Err(e) => tracing::warn!(error = %e, "could not read queue stats"),
            }
        }
    });
}
