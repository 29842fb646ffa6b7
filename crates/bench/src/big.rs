//! Row 4: one big result per format, passed by reference. The rows are staged once as gzip
//! NDJSON in the `staging` bucket; each delivery names them with `rowsUrl` and is handled
//! by a fresh worker process, so that its resident-memory high-water mark (`VmHWM`) belongs
//! to that format alone.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_core::{Compression, Format};
use flate2::write::GzEncoder;
use serde_json::json;

use crate::api::Refused;
use crate::cluster::{BUCKET, Cluster, STAGING_BUCKET, Services};
use crate::cpu;
use crate::rows;
use crate::table::{Line, int, mb, mib, rate};

/// Peak RSS the streaming formats must stay under.
const RSS_TARGET_KIB: u64 = 100 * 1024;

pub struct Params {
    pub rows: usize,
    pub formats: Vec<Format>,
    pub timeout: Duration,
}

pub async fn run(services: &Services, p: &Params) -> Vec<Line> {
    match run_inner(services, p).await {
        Ok(lines) => lines,
        Err(e) => vec![Line::failed(
            "4",
            format!("{}-row delivery", int(p.rows as u64)),
            &format!("{e:#}"),
        )],
    }
}

async fn run_inner(services: &Services, p: &Params) -> anyhow::Result<Vec<Line>> {
    // Under the bench tenant's own prefix, the only place its staged rows may be read from.
    let staged_key = format!("bench/rows/{}.ndjson.gz", p.rows);
    let rows_url = format!("s3://{STAGING_BUCKET}/{staged_key}");
    let staged = stage(services, &staged_key, p.rows).await?;

    let mut cluster = Cluster::start(services, "big").await?;
    let mut lines = Vec::new();
    cluster.add_workers(1).await?;
    let baseline = cluster.workers[0].proc.rss_kib();
    cluster.stop_workers();
    for (i, &format) in p.formats.iter().enumerate() {
        let name = format!(
            "{}-row {} delivery",
            int(p.rows as u64),
            format.extension().to_uppercase()
        );
        eprintln!("bench: {name}");
        match deliver(services, &mut cluster, format, &rows_url, p, i).await {
            Ok(d) => {
                lines.push(d.line(name, format, p.rows, &staged));
            }
            Err(e) => {
                match rows_url_refused(&e) {
                    Some(why) => {
                        // The feature is not in this build: the other formats would say the same.
                        for &f in &p.formats[i..] {
                            let n = format!(
                                "{}-row {} delivery",
                                int(p.rows as u64),
                                f.extension().to_uppercase()
                            );
                            lines.push(Line::failed("4", n, &why));
                        }
                        break;
                    }
                    None => lines.push(Line::failed("4", name, &format!("{e:#}"))),
                }
            }
        }
        cluster.stop_workers();
    }
    if let Some(kib) = baseline {
        lines.insert(
            0,
            Line::new("4", "Worker RSS right after start (baseline)")
                .setup("a fresh idle worker once it answers /readyz, VmRSS")
                .result(mib(kib)),
        );
    }
    Ok(lines)
}

/// Why, if `e` is the API refusing `rowsUrl` itself: a build without rows by reference.
fn rows_url_refused(e: &anyhow::Error) -> Option<String> {
    e.downcast_ref::<Refused>()
        .filter(|r| matches!(r.status, 400 | 422) && r.body.to_string().contains("rowsUrl"))
        .map(|r| format!("the API refuses `rowsUrl` ({})", r.reason()))
}

/// Writes `n` rows as gzip NDJSON into the staging bucket; describes what was staged.
async fn stage(services: &Services, key: &str, n: usize) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let (gz, raw) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<u8>, u64)> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut raw = 0u64;
        let mut line = Vec::with_capacity(256);
        for i in 0..n {
            line.clear();
            serde_json::to_writer(&mut line, &rows::row(i))?;
            line.push(b'\n');
            raw += line.len() as u64;
            enc.write_all(&line)?;
        }
        Ok((enc.finish()?, raw))
    })
    .await??;
    let gz_len = gz.len();
    services
        .s3(&services.staging_key)
        .put_object()
        .bucket(STAGING_BUCKET)
        .key(key)
        .content_type("application/x-ndjson")
        .content_length(gz_len as i64)
        .body(gz.into())
        .send()
        .await
        .context("staging the big result")?;
    eprintln!(
        "bench: staged {} rows in {:.1} s",
        int(n as u64),
        t0.elapsed().as_secs_f64()
    );
    Ok(format!(
        "`rowsUrl` to {} of NDJSON staged as {} gzip",
        mb(raw),
        mb(gz_len as u64)
    ))
}

/// One big delivery's figures.
struct Delivered {
    bytes: u64,
    rows: u64,
    elapsed: Duration,
    peak_kib: u64,
    /// CPU seconds the worker used, start-up included.
    worker_cpu: f64,
    timings: serde_json::Value,
}

impl Delivered {
    fn line(&self, name: String, format: Format, expected_rows: usize, staged: &str) -> Line {
        let secs = self.elapsed.as_secs_f64();
        let mut result = format!(
            "**{}/s** ({} in {:.1} s, {} rows/s); peak RSS **{}**",
            mb((self.bytes as f64 / secs) as u64),
            mb(self.bytes),
            secs,
            rate(self.rows as f64 / secs),
            mib(self.peak_kib),
        );
        let detail = format!(
            "worker CPU {:.1} s ({:.1} cores); record timings: render {} ms, upload {} ms \
             (they overlap: rows stream into the multipart upload)",
            self.worker_cpu,
            self.worker_cpu / secs,
            self.timings["renderMs"],
            self.timings["uploadMs"]
        );
        if self.rows != expected_rows as u64 {
            result.push_str(&format!(
                " — record says {} rows, expected {}",
                int(self.rows),
                int(expected_rows as u64)
            ));
        }
        let target = match format {
            Format::Xlsx => "none (XLSX has no memory target)".to_owned(),
            _ => format!(
                "peak RSS < 100 MiB: {}",
                if self.peak_kib < RSS_TARGET_KIB {
                    "met"
                } else {
                    "**NOT met**"
                }
            ),
        };
        Line::new("4", name)
            .detail(detail)
            .setup(format!(
                "{staged}; 1 fresh worker; timed by the record, enqueuedAt to deliveredAt; peak = VmHWM"
            ))
            .result(result)
            .target(target)
    }
}

async fn deliver(
    services: &Services,
    cluster: &mut Cluster<'_>,
    format: Format,
    rows_url: &str,
    p: &Params,
    i: usize,
) -> anyhow::Result<Delivered> {
    let prefix = format!("big/{}/", format.extension());
    let dest = cluster
        .create_destination(&prefix, format, Compression::None)
        .await?;
    cluster.add_workers(1).await?;

    let body = json!({
        "destinationId": dest,
        "jobId": format!("bench-big-{i}"),
        "partnerInventoryId": format!("BIG-{}", format.extension().to_uppercase()),
        "completedAt": "2026-06-07T10:00:00Z",
        "columns": rows::columns(),
        "rowsUrl": rows_url,
    });
    let start = Instant::now();
    let id = cluster.api.enqueue(body.to_string().into_bytes()).await?;
    let record = loop {
        let record = cluster.api.get(&format!("/api/v1/deliveries/{id}")).await?;
        match record["status"].as_str() {
            Some("DELIVERED") => break record,
            Some("FAILED" | "SUPERSEDED" | "HELD") => bail!(
                "the delivery ended {}: {}",
                record["status"],
                record["error"]
            ),
            _ => {}
        }
        if start.elapsed() > p.timeout {
            bail!(
                "not delivered after {:?} (status {})",
                p.timeout,
                record["status"]
            );
        }
        cluster.check_running()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let polled = start.elapsed();
    let elapsed = enqueued_to_delivered(&record)?;
    eprintln!(
        "bench:   delivered in {:.3} s by the record ({:.3} s by the bench's polling), \
         record timings {}",
        elapsed.as_secs_f64(),
        polled.as_secs_f64(),
        record["timings"]
    );
    let worker = cluster.workers.last().context("a worker")?;
    let peak_kib = worker
        .proc
        .peak_rss_kib()
        .context("reading the worker's VmHWM")?;

    let worker_cpu = cpu::seconds(worker.proc.pid()).unwrap_or(0.0);
    let bytes = record["bytes"].as_u64().context("no bytes in the record")?;
    let head = services
        .s3(&services.key)
        .head_object()
        .bucket(BUCKET)
        .key(record["key"].as_str().context("no key in the record")?)
        .send()
        .await
        .context("HeadObject of the delivered file")?;
    if head.content_length() != Some(bytes as i64) {
        bail!(
            "the record says {bytes} bytes, the object has {:?}",
            head.content_length()
        );
    }
    Ok(Delivered {
        bytes,
        rows: record["rows"].as_u64().unwrap_or(0),
        elapsed,
        peak_kib,
        worker_cpu,
        timings: record["timings"].clone(),
    })
}

/// How long a delivery took by its own record: from the API's `enqueuedAt` to the
/// worker's `deliveredAt` (one machine, one clock), without the bench's polling interval.
fn enqueued_to_delivered(record: &serde_json::Value) -> anyhow::Result<Duration> {
    let at = |field: &str| {
        let text = record[field]
            .as_str()
            .with_context(|| format!("no {field} in the record"))?;
        chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("the record's {field} {text:?}"))
    };
    (at("deliveredAt")? - at("enqueuedAt")?)
        .to_std()
        .context("the record was delivered before it was enqueued")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_a_delivery_by_its_record() {
        let record = json!({"enqueuedAt": "2026-06-07T10:00:00.250Z",
                            "deliveredAt": "2026-06-07T10:00:01.000Z"});
        assert_eq!(
            enqueued_to_delivered(&record).unwrap(),
            Duration::from_millis(750)
        );
        assert!(enqueued_to_delivered(&json!({"enqueuedAt": "2026-06-07T10:00:00Z"})).is_err());
    }

    #[test]
    fn tells_a_build_without_rows_by_reference() {
        let refused = |status, body| anyhow::Error::from(Refused { status, body });
        let unknown = json!({"error": {"code": "invalid_request", "message":
            "unknown field `rowsUrl`, expected one of `destinationId`, `rows`"}});
        let why = rows_url_refused(&refused(422, unknown.clone())).expect("recognized");
        assert!(why.contains("unknown field `rowsUrl`"), "{why}");
        assert!(rows_url_refused(&refused(422, unknown).context("enqueueing")).is_some());
        let other = json!({"error": {"message": "destinationId: no such destination"}});
        assert!(rows_url_refused(&refused(422, other)).is_none());
        assert!(rows_url_refused(&anyhow::anyhow!("connection refused")).is_none());
    }
}
