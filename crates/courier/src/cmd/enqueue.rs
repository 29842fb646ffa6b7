//! `courier enqueue`: queue one delivery from the command line, the way an upstream job
//! that links the producer library would.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use courier_core::TenantId;
use courier_core::rows::InlineRows;
use courier_producer::wire::JobCompletedRequest;
use courier_producer::{Quotas, Rules, Service, ServiceError, StagingStore};
use serde_json::Value;

use crate::common::{BoundaryArgs, RedisArgs, ReplicaArgs, StagingArgs, WaitingQuotaArgs};
use crate::progress::{Progress, ProgressReader};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tenant that owns the destination.
    #[arg(long, env = "COURIER_TENANT")]
    tenant: String,
    /// The destination to deliver to (`dst_…`).
    #[arg(long)]
    destination: String,
    #[arg(long)]
    job_id: String,
    #[arg(long)]
    partner_inventory_id: String,
    /// When the job completed, RFC 3339 (default: now). Its UTC date goes into the key.
    #[arg(long)]
    completed_at: Option<String>,
    /// Column order, comma-separated (default: the keys of the first row).
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Rows: a JSON array of objects or NDJSON, from this file or `-` for stdin.
    #[arg(long, default_value = "-", conflicts_with = "rows_url")]
    rows: PathBuf,
    /// Instead of rows, a reference to NDJSON rows (`.gz` for gzip) that the worker
    /// streams: `s3://bucket/key` in the fleet's staging store, or an http(s) URL.
    #[arg(long, conflicts_with = "stage")]
    rows_url: Option<String>,
    /// Upload this NDJSON file (`.gz` for gzip) to the staging store first, under
    /// `{tenant}/`, and deliver it by reference: for results too big to send inline.
    #[arg(long)]
    stage: Option<PathBuf>,
    /// Where an http(s) `--rows-url` may point, as for the API.
    #[command(flatten)]
    egress: BoundaryArgs,
    /// Deliver at most once per key: enqueueing again with the same key (and the same job)
    /// within 24 hours prints the first delivery's id and queues nothing. Use one per job
    /// when a failed run may be retried.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    replicas: ReplicaArgs,
    #[command(flatten)]
    waiting: WaitingQuotaArgs,
    #[command(flatten)]
    staging: StagingArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&args.tenant).map_err(anyhow::Error::msg)?;
    let staged = match &args.stage {
        Some(path) => Some(stage(&args, &tenant, path).await?),
        None => None,
    };
    let rows_url = staged.or(args.rows_url.clone());
    let rows = match &rows_url {
        Some(_) => None,
        None => Some(InlineRows::from_raw(serde_json::value::to_raw_value(
            &read_rows(&args.rows)?,
        )?)),
    };
    let request = JobCompletedRequest {
        destination_id: args.destination,
        job_id: args.job_id,
        partner_inventory_id: args.partner_inventory_id,
        completed_at: args.completed_at.unwrap_or_else(|| Utc::now().to_rfc3339()),
        columns: args.columns,
        rows,
        rows_url,
        column_types: None,
    };
    let rules = Rules {
        egress: args.egress.policy()?,
        staging_bucket: args.staging.staging_bucket.clone(),
        wait_replicas: args.replicas.redis_wait_replicas,
        wait_replicas_timeout: Duration::from_millis(args.replicas.redis_wait_timeout_ms.max(1)),
        quotas: Quotas {
            max_waiting_per_tenant: args.waiting.max_waiting_per_tenant,
            ..Quotas::default()
        },
        ..Rules::default()
    };
    let conn = args.redis.connect().await?;
    // Enqueueing reads no destination secret, hence no cipher.
    let service = Service::new(conn, args.redis.keys(), None, rules);
    let enqueued = service
        .enqueue(&tenant, request, args.idempotency_key.as_deref())
        .await
        .map_err(|e| match e {
            ServiceError::Invalid(errors) => anyhow::anyhow!("invalid delivery: {errors}"),
            ServiceError::Store(e) => anyhow::Error::new(e).context("enqueueing"),
            other => anyhow::Error::new(other),
        })?;
    if enqueued.replayed {
        eprintln!(
            "the idempotency key was used before: this is its delivery, nothing new was queued"
        );
    }
    println!("{}", enqueued.record.id);
    Ok(())
}

/// Uploads `path` to the staging store under `{tenant}/`; returns its `s3://` reference.
async fn stage(args: &Args, tenant: &TenantId, path: &std::path::Path) -> anyhow::Result<String> {
    let bucket = args
        .staging
        .staging_bucket
        .clone()
        .context("--stage needs the staging bucket (COURIER_STAGING_BUCKET)")?;
    let client = args.staging.client(courier_s3::S3Timeouts::default()).await;
    let url = StagingStore { client, bucket }
        .stage_file(tenant, path)
        .await
        .with_context(|| format!("staging {}", path.display()))?;
    eprintln!("staged {} as {}", path.display(), url.as_str());
    Ok(url.as_str().to_owned())
}

/// Reads rows from `path` (`-` for stdin), with progress for big files.
fn read_rows(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading rows from stdin")?;
        s
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = ProgressReader {
            inner: file,
            progress: Progress::new(len, "reading rows", true),
        };
        let mut s = String::with_capacity(usize::try_from(len).unwrap_or(0));
        reader
            .read_to_string(&mut s)
            .with_context(|| format!("reading rows from {}", path.display()))?;
        reader.progress.finish();
        s
    };
    parse_rows(&text)
}

/// Accepts a JSON array of rows, or NDJSON (one object per line, blank lines skipped).
fn parse_rows(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).context("rows are not a valid JSON array");
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("line {} is not valid JSON", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_array_or_ndjson() {
        assert_eq!(parse_rows(r#" [{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert_eq!(parse_rows("{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        let err = parse_rows("{\"a\":1}\nnope\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
