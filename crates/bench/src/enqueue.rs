//! Row 5: how fast the API accepts small deliveries with no worker running, and how much
//! Redis memory each waiting delivery takes (its record, its index entries and the queued
//! task payload with its rows).

use std::time::Instant;

use anyhow::Context;
use courier_core::{Compression, Format};
use futures::{StreamExt, TryStreamExt};

use crate::cluster::{Cluster, Services};
use crate::cpu;
use crate::rows::JobBodies;
use crate::table::{Line, int, rate};

pub struct Params {
    pub deliveries: usize,
    pub rows: usize,
    pub concurrency: usize,
}

pub async fn run(services: &Services, p: &Params) -> Vec<Line> {
    match run_inner(services, p).await {
        Ok(lines) => lines,
        Err(e) => vec![Line::failed("5", "Enqueue rate", &format!("{e:#}"))],
    }
}

async fn run_inner(services: &Services, p: &Params) -> anyhow::Result<Vec<Line>> {
    let cluster = Cluster::start(services, "enqueue").await?;
    let dest = cluster
        .create_destination("enqueue/", Format::Csv, Compression::None)
        .await?;
    let bodies = JobBodies::new(&dest, p.rows);
    let before = cluster.redis_info("memory", "used_memory").await?;

    let groups: Vec<_> = cluster
        .cpu_groups()
        .into_iter()
        .filter(|(name, _)| *name != "workers" && *name != "Garage")
        .collect();
    let cpu0 = cpu::Sample::take(&groups);
    let cmds0 = cluster
        .redis_info("stats", "total_commands_processed")
        .await?;
    let start = Instant::now();
    futures::stream::iter(0..p.deliveries)
        .map(|i| cluster.api.enqueue(bodies.body("enq", i)))
        .buffer_unordered(p.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("enqueueing")?;
    let elapsed = start.elapsed();
    let cpu1 = cpu::Sample::take(&groups);
    let cmds1 = cluster
        .redis_info("stats", "total_commands_processed")
        .await?;
    let units = p.deliveries as u64;
    let after = cluster.redis_info("memory", "used_memory").await?;
    let per_delivery = after.saturating_sub(before) as f64 / p.deliveries as f64;

    let n = int(p.deliveries as u64);
    Ok(vec![
        Line::new("5", "Enqueue rate")
            .setup(format!(
                "{n} × POST /api/v1/deliveries, {} rows (~{} bytes) each, {} in flight, no workers",
                p.rows,
                int(bodies.body("enq", 0).len() as u64),
                p.concurrency
            ))
            .result(format!(
                "**{} enqueues/s** ({n} in {:.2} s)",
                rate(p.deliveries as f64 / elapsed.as_secs_f64()),
                elapsed.as_secs_f64()
            ))
            .detail(format!(
                "CPU per enqueue: {}; {:.1} cores busy; {:.0} Redis commands per enqueue",
                cpu0.per_unit(&cpu1, units),
                cpu0.total(&cpu1) / elapsed.as_secs_f64(),
                (cmds1 - cmds0) as f64 / units as f64
            )),
        Line::new("5", "Redis memory per waiting delivery")
            .setup(format!(
                "INFO memory used_memory before and after the {n} waiting deliveries above"
            ))
            .result(format!(
                "**{} bytes/delivery** (record + indexes + queued task payload with its {} rows)",
                int(per_delivery.round() as u64),
                p.rows
            )),
    ])
}
