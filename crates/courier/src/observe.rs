//! Logs and metrics: `tracing` to stderr (JSON with `COURIER_LOG_FORMAT=json`), and a
//! Prometheus recorder whose text is served on `/metrics`.
//!
//! Metric names have one owner per kind of process: a worker's are in
//! `courier_worker::telemetry`, the enqueue counter the API exports is in
//! `courier_producer::telemetry`, and the fleet-wide queue gauges both kinds export are here.
//! Each owner registers HELP text for every name it owns.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use courier_store::{QueueStats, RedisConn, StatsReader};
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

/// Tasks by state (waiting, scheduled, in_flight, held, dead), fleet-wide.
pub const QUEUE_DEPTH: &str = "courier_queue_depth";
/// Age of the oldest waiting task.
pub const QUEUE_OLDEST_WAITING_AGE: &str = "courier_queue_oldest_waiting_age_seconds";
/// Workers whose heartbeat is recent.
pub const WORKERS_LIVE: &str = "courier_workers_live";
/// Destinations by state (failing, paused).
pub const DESTINATIONS: &str = "courier_destinations";

/// Registers the HELP text of the fleet-wide gauges with the installed recorder.
pub fn describe_queue_stats() {
    let same = "every process reports the same fleet-wide value; aggregate with max()";
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        format!("Delivery tasks by state: waiting, scheduled, in_flight, held, dead ({same}).")
    );
    metrics::describe_gauge!(
        QUEUE_OLDEST_WAITING_AGE,
        metrics::Unit::Seconds,
        format!("Age of the oldest task waiting to run, 0 when none waits ({same}).")
    );
    metrics::describe_gauge!(
        WORKERS_LIVE,
        format!("Workers whose last heartbeat is within the liveness window ({same}).")
    );
    metrics::describe_gauge!(
        DESTINATIONS,
        format!("Destinations by state: failing, paused ({same}).")
    );
}

/// Sets the fleet-wide gauges from one snapshot.
pub fn record_queue_stats(s: &QueueStats) {
    for (state, v) in [
        ("waiting", s.waiting),
        ("scheduled", s.scheduled),
        ("in_flight", s.in_flight),
        ("held", s.held),
        ("dead", s.dead),
    ] {
        metrics::gauge!(QUEUE_DEPTH, "state" => state).set(v as f64);
    }
    metrics::gauge!(QUEUE_OLDEST_WAITING_AGE).set(s.oldest_waiting_age.as_secs_f64());
    metrics::gauge!(WORKERS_LIVE).set(s.live_workers as f64);
    metrics::gauge!(DESTINATIONS, "state" => "failing").set(s.failing_destinations as f64);
    metrics::gauge!(DESTINATIONS, "state" => "paused").set(s.paused_destinations as f64);
}

/// Every `every`, reads the fleet-wide queue snapshot from Redis into gauges. Every
/// process reports the same values; aggregate them with `max()`, not `sum()`.
pub fn spawn_queue_stats(reader: StatsReader, every: Duration) {
    describe_queue_stats();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match reader.read().await {
                Ok(s) => record_queue_stats(&s),
                Err(e) => tracing::warn!(error = %e, "could not read queue stats"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use courier_core::Format;
    use courier_worker::telemetry;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// What a process of each kind renders once its telemetry is registered and every
    /// metric has a value.
    fn scrape(kind: &str) -> String {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in telemetry::buckets() {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets)
                .unwrap();
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            match kind {
                "worker" => {
                    telemetry::register();
                    // Histograms show only once they hold a value.
                    telemetry::rendered(Format::Csv, Duration::from_millis(3));
                    telemetry::uploaded(Format::Csv, 10, Duration::from_millis(5));
                    telemetry::delivery_finished(
                        telemetry::Outcome::Delivered,
                        Format::Csv,
                        Duration::from_secs(1),
                    );
                    telemetry::batch_window_closed("delivered", 3.0);
                }
                _ => courier_producer::telemetry::register(),
            }
            describe_queue_stats();
            record_queue_stats(&QueueStats::default());
        });
        handle.render()
    }

    fn lines_starting(scrape: &str, prefix: &str) -> BTreeSet<String> {
        scrape
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_metric_each_kind_of_process_exports_has_help_text() {
        let mut exported = BTreeSet::new();
        for kind in ["worker", "api"] {
            let text = scrape(kind);
            let typed = lines_starting(&text, "# TYPE ");
            let helped = lines_starting(&text, "# HELP ");
            assert!(!typed.is_empty(), "{kind}: {text}");
            assert_eq!(
                typed, helped,
                "{kind}: every metric has a HELP line\n{text}"
            );
            exported.extend(typed);
        }
        // Exactly the names the dashboards and alerts may use (deploy/metrics.txt).
        let documented: BTreeSet<String> = include_str!("../../../deploy/metrics.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(exported, documented);
    }
}
