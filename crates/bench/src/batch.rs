//! Row 8: batched destinations. How fast the API appends small deliveries to a batched
//! destination's window (no worker running), then how fast one worker delivers that window
//! (1,000,000 rows by default) into its gzip NDJSON objects, and the worker's peak memory
//! while it does.
//!
//! The window is an hour long, so that every append lands in one window (two if the hour
//! turns meanwhile); once the appends are done the bench makes the window due at once (its
//! score in the set of open windows, the one thing it writes to Redis itself) instead of
//! waiting for the hour to end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_store::Keys;
use futures::{StreamExt, TryStreamExt};
use redis::AsyncCommands;
use serde_json::json;

use crate::cluster::{BUCKET, Cluster, Services};
use crate::rows::JobBodies;
use crate::table::{Line, int, mib, rate};

pub struct Params {
    pub deliveries: usize,
    pub rows: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

pub async fn run(services: &Services, p: &Params) -> Vec<Line> {
    match run_inner(services, p).await {
        Ok(lines) => lines,
        Err(e) => vec![Line::failed("8", "Batched destination", &format!("{e:#}"))],
    }
}

async fn run_inner(services: &Services, p: &Params) -> anyhow::Result<Vec<Line>> {
    let mut cluster = Cluster::start(services, "batch").await?;
    let body = json!({
        "type": "S3",
        "name": "bench batched",
        "s3": {
            "bucket": BUCKET,
            "region": courier_test_support::GARAGE_REGION,
            "accessKeyId": services.key.id,
            "secretAccessKey": services.key.secret,
            "endpointUrl": services.garage.endpoint(),
            "pathPrefix": "batched/",
        },
        "format": "NDJSON",
        "compression": "GZIP",
        "batch": {"windowSeconds": 3600},
        "status": "ACTIVE",
    });
    let created = cluster
        .api
        .post(
            "/api/v1/delivery-destinations",
            body.to_string().into(),
            201,
        )
        .await
        .context("creating the batched destination")?;
    let dest = created["id"].as_str().context("no id")?.to_owned();
    let bodies = JobBodies::new(&dest, p.rows);

    let start = Instant::now();
    futures::stream::iter(0..p.deliveries)
        .map(|i| cluster.api.enqueue(bodies.body("batch", i)))
        .buffer_unordered(p.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("appending")?;
    let appended = start.elapsed();
    let total_rows = (p.deliveries * p.rows) as u64;

    // Make the window(s) due now rather than at the end of the hour.
    let keys = Keys::default();
    let mut conn = redis::Client::open(cluster.redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let open: Vec<String> = conn.zrange(keys.batch_due(), 0, -1).await?;
    for member in &open {
        let () = conn.zadd(keys.batch_due(), member, 0).await?;
    }

    cluster.add_workers(1).await?;
    let metrics = format!("{}/metrics", cluster.workers[0].metrics_url);
    let start = Instant::now();
    loop {
        let page = cluster.api.get_text(&metrics).await?;
        let rows = counter(&page, "courier_batch_rows_total");
        if rows >= total_rows as f64 {
            break;
        }
        cluster.check_running()?;
        if start.elapsed() > p.timeout {
            bail!(
                "{rows} of {total_rows} rows delivered after {:?}",
                p.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = start.elapsed();
    let peak = cluster.workers[0].proc.peak_rss_kib().unwrap_or(0);
    let page = cluster.api.get_text(&metrics).await?;
    let objects = counter(&page, "courier_batch_objects_total") as u64;
    let bytes = counter(&page, "courier_batch_object_bytes_total") as u64;

    let n = int(p.deliveries as u64);
    Ok(vec![
        Line::new("8", "Batched destination: append rate")
            .setup(format!(
                "{n} × POST /api/v1/deliveries of {} rows to a batched destination \
                 (windowSeconds 3600), {} in flight, no workers",
                p.rows, p.concurrency
            ))
            .result(format!(
                "**{} rows/s appended** ({} deliveries/s; {} rows in {:.2} s)",
                rate(total_rows as f64 / appended.as_secs_f64()),
                rate(p.deliveries as f64 / appended.as_secs_f64()),
                int(total_rows),
                appended.as_secs_f64()
            )),
        Line::new("8", "Batched destination: window delivered")
            .setup(format!(
                "the window{} of those {} rows made due, then 1 worker started",
                if open.len() == 1 { "" } else { "s" },
                int(total_rows)
            ))
            .result(format!(
                "**{} rows/s delivered** ({:.2} s from the worker's start; {} object(s), {} \
                 gzip bytes); worker peak RSS **{}**",
                rate(total_rows as f64 / delivered.as_secs_f64()),
                delivered.as_secs_f64(),
                objects,
                int(bytes),
                mib(peak)
            )),
    ])
}

/// The sum of a counter's lines in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
