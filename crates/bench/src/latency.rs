//! Row 6: small deliveries to a store 50 ms away. One worker drains a pre-filled queue into
//! the bench's Garage through a [`LatencyProxy`] that adds the
//! round-trip time, first with the worker's default settings, then with
//! `COURIER_WORKER_CONCURRENCY` raised (and the upload cap per destination raised with it,
//! which would bound the run otherwise). Each line says whether the rate is bounded by the
//! deliveries in flight (the worker's cores mostly idle) or by CPU.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::cluster::Services;
use crate::small;
use crate::table::{Line, int, rate};
use courier_test_support::LatencyProxy;

/// With the worker's default settings, one worker must deliver this many per second.
const TARGET_PER_SEC: f64 = 500.0;

pub struct Params {
    pub rows: usize,
    pub deliveries: usize,
    pub enqueuers: usize,
    pub rtt: Duration,
    /// `COURIER_WORKER_CONCURRENCY` of the runs after the default one.
    pub concurrency: Vec<usize>,
}

pub async fn run(services: &Services, p: &Params) -> Vec<Line> {
    let ms = p.rtt.as_millis();
    let proxy = match start_proxy(services, p.rtt).await {
        Ok(proxy) => proxy,
        Err(e) => return vec![Line::failed("6", "Store 50 ms away", &format!("{e:#}"))],
    };
    // The worker's defaults: neither COURIER_WORKER_CONCURRENCY (which the bench sets for
    // the other rows) nor the limit on uploads per destination.
    let mut runs = vec![(
        "default settings".to_owned(),
        None,
        vec![("COURIER_WORKER_CONCURRENCY", String::new())],
    )];
    for &c in &p.concurrency {
        runs.push((
            format!("COURIER_WORKER_CONCURRENCY={c}, upload limit fixed at {c}"),
            Some(c),
            vec![("COURIER_WORKER_CONCURRENCY", c.to_string())],
        ));
    }
    let mut lines = Vec::new();
    for (i, (how, cap, env)) in runs.into_iter().enumerate() {
        let name = format!("Store {ms} ms away, 1 worker, {how}");
        eprintln!("bench: {name}");
        let params = small::Params {
            upload_cap: cap,
            worker_env: env,
            endpoint: Some(proxy.endpoint()),
            label: format!("-remote-{i}"),
            ..small::Params::new(p.rows, p.deliveries, 1, p.enqueuers)
        };
        let line = Line::new("6", name).setup(format!(
            "{} × {}-row CSV to one destination whose endpoint is a TCP proxy on loopback \
             delaying every chunk by {} ms each way ({ms} ms round trip) in front of Garage; \
             queue pre-filled; worker ready → last delivered",
            int(p.deliveries as u64),
            int(p.rows as u64),
            ms / 2
        ));
        match small::run(services, small::Feed::Drain, &params).await {
            Ok(run) => {
                let per_sec = run.per_sec();
                // One worker can use every core (its runtime has a thread per core): the run
                // is CPU-bound when the machine's cores are nearly all busy, whoever keeps
                // them busy (on a shared machine, not only the run's processes).
                let busy = run.machine_cores.unwrap_or(run.cores_busy);
                let bound = if busy < 0.8 * cores() {
                    "concurrency"
                } else if run.cores_busy >= 0.5 * busy {
                    "CPU"
                } else {
                    "CPU, mostly taken by processes outside the run (rerun on a quiet machine)"
                };
                let mut detail = format!(
                    "bounded by {bound}: {busy:.1} of {} cores busy, {:.1} by the run (the worker \
                     {:.2}); worker CPU per delivery {:.2} ms, workers + Redis {:.2} ms; {:.0} \
                     Redis commands per delivery",
                    cores(),
                    run.cores_busy,
                    run.worker_cores,
                    run.worker_cores * run.elapsed.as_secs_f64() * 1000.0
                        / run.deliveries.max(1) as f64,
                    run.workers_redis_cpu * 1000.0,
                    run.redis_commands
                );
                if let Some(c) = cap {
                    detail.push_str(&format!(
                        "; {c} in flight ÷ {ms} ms = {}/s at one round trip each",
                        rate(c as f64 / p.rtt.as_secs_f64())
                    ));
                }
                let target = if cap.is_none() {
                    format!(
                        "≥ {TARGET_PER_SEC:.0}/s with default settings: {}",
                        if per_sec >= TARGET_PER_SEC {
                            "met"
                        } else {
                            "**NOT met**"
                        }
                    )
                } else {
                    String::new()
                };
                lines.push(
                    line.result(format!(
                        "**{} deliveries/s** ({} in {:.2} s)",
                        rate(per_sec),
                        int(run.deliveries),
                        run.elapsed.as_secs_f64()
                    ))
                    .detail(detail)
                    .target(target),
                );
            }
            Err(e) => lines.push(Line::failed("6", line.measurement, &format!("{e:#}"))),
        }
    }
    lines
}

async fn start_proxy(services: &Services, rtt: Duration) -> anyhow::Result<LatencyProxy> {
    let endpoint = services.garage.endpoint();
    let upstream: SocketAddr = endpoint
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("Garage's endpoint {endpoint} is not http://<ip>:<port>"))?;
    LatencyProxy::start(upstream, rtt / 2).await
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}
