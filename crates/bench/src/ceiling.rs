//! Row 1: the raw PutObject ceiling. The same object bytes a small delivery uploads, put
//! straight into the same Garage by `in_flight` loops sharing one client (so one connection
//! pool), with no queue, no Redis and no rendering. Nothing end to end can beat this.
//!
//! [`Client::WithMd5`] puts the same objects the way a worker does: through one client (a
//! worker keeps one per destination) and with a `Content-MD5` header, which the store
//! verifies. The difference between the two is the cost of the integrity check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};

use crate::cpu;

/// Objects put and how long it took.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub objects: u64,
    pub elapsed: Duration,
    /// CPU time per object of Garage and of this process (the client).
    pub cpu_per_object: String,
    pub cores_busy: f64,
}

impl Ceiling {
    pub fn per_sec(&self) -> f64 {
        self.objects as f64 / self.elapsed.as_secs_f64()
    }
}

/// How the loops get their S3 client.
#[derive(Clone)]
pub enum Client {
    /// One client, cloned: one connection pool for all requests.
    Shared(aws_sdk_s3::Client),
    /// One client and `Content-MD5` on every request, like a worker.
    WithMd5(aws_sdk_s3::Client),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Client::Shared(_) => "Shared",
            Client::WithMd5(_) => "WithMd5",
        })
    }
}

pub async fn run(
    garage_pid: Vec<u32>,
    client: Client,
    bucket: &str,
    body: Bytes,
    in_flight: usize,
    time: Duration,
) -> anyhow::Result<Ceiling> {
    let done = Arc::new(AtomicU64::new(0));
    let groups = [("Garage", garage_pid), ("client", vec![std::process::id()])];
    let cpu0 = cpu::Sample::take(&groups);
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = Vec::new();
    let mode = match client {
        Client::Shared(_) => "shared",
        Client::WithMd5(_) => "md5",
    };
    for lane in 0..in_flight {
        let (client, body, done, bucket) = (
            client.clone(),
            body.clone(),
            done.clone(),
            bucket.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (s3, md5) = match &client {
                    Client::Shared(s3) => (s3.clone(), None),
                    Client::WithMd5(s3) => (
                        s3.clone(),
                        Some(base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body))),
                    ),
                };
                s3.put_object()
                    .bucket(&bucket)
                    .key(format!("ceiling/{mode}-{in_flight}/{lane}-{n}.csv"))
                    .content_type("text/csv; charset=utf-8")
                    .content_length(body.len() as i64)
                    .set_content_md5(md5)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let cpu1 = cpu::Sample::take(&groups);
    let objects = done.load(Ordering::Relaxed);
    Ok(Ceiling {
        objects,
        elapsed,
        cpu_per_object: cpu0.per_unit(&cpu1, objects),
        cores_busy: cpu0.total(&cpu1) / elapsed.as_secs_f64(),
    })
}
