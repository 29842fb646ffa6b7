//! Ops can trust the numbers: a real Prometheus (Debian's) scrapes a running worker and the
//! API, and the delivered count read back through its HTTP API matches the deliveries made.
//! Every metric the alerts and the dashboard use (deploy/metrics.txt) is in a real scrape,
//! and every metric either process exports has HELP text.
//! Health and readiness answer as Kubernetes expects, and JSON logs carry delivery ids.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, Stack};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn names_in(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| l.starts_with("courier_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_delivered_count_and_every_documented_metric() {
    let mut stack = Stack::start(0).await;
    stack.add_worker_with_env(&[("COURIER_LOG_FORMAT", "json".into())]);
    stack.wait_worker(0).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "obs/"))
        .await;
    const N: usize = 5;
    for i in 0..N {
        let id = stack
            .enqueue(&dest, &format!("job-o{i}"), &format!("INV-O{i}"))
            .await;
        assert_eq!(stack.wait_final(&id, WAIT).await["status"], "DELIVERED");
    }
    // One batched delivery, so that its window's metrics (the lag histogram) are exported.
    let mut batched = stack.destination_body("NDJSON", "GZIP", "obs-batch/");
    batched["batch"] = serde_json::json!({"windowSeconds": 5});
    let batched = stack.create_destination(&batched).await;
    let id = stack.enqueue(&batched, "job-batched", "INV-B").await;
    assert_eq!(stack.wait_final(&id, WAIT).await["status"], "DELIVERED");

    // A real Prometheus scrapes the worker and the API every second.
    let dir = stack.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let worker = format!("127.0.0.1:{}", stack.workers[0].1);
    let api = stack.api_url.trim_start_matches("http://").to_owned();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: courier-worker\n    static_configs:\n      - targets: ['{worker}']\n  - job_name: courier-api\n    static_configs:\n      - targets: ['{api}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = courier_test_support::free_port();
    let log = dir.join("prometheus.log");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prometheus from Debian's package (scripts/ensure-tools.sh --prometheus)");
    let prom = Proc { child, log };
    let query = |q: &str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        let http = stack.http.clone();
        let q = q.to_owned();
        async move {
            let resp = http.get(url).query(&[("query", q)]).send().await.ok()?;
            let body: Value = resp.json().await.ok()?;
            body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if query("sum(courier_deliveries_total{outcome=\"delivered\"})")
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never answered:\n{}",
            prom.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (q, want) in [
        // Prometheus counts the deliveries made, the batched one among them.
        (
            "sum(courier_deliveries_total{outcome=\"delivered\"})",
            N as f64 + 1.0,
        ),
        ("sum(courier_enqueued_total)", N as f64 + 1.0),
        ("max(courier_workers_live)", 1.0),
        ("max(courier_queue_depth{state=\"waiting\"})", 0.0),
    ] {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = query(q).await;
            if got == Some(want) {
                break;
            }
            assert!(Instant::now() < deadline, "{q} = {got:?}, want {want}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // Every name the alerts and dashboard use is exported by a real process.
    let documented: BTreeSet<String> = include_str!("../deploy/metrics.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let api_scrape = stack
        .http
        .get(format!("{}/metrics", stack.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let worker_scrape = stack.worker_metrics(0).await;
    for (process, text) in [("worker", &worker_scrape), ("api", &api_scrape)] {
        for name in names_in(text) {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{process} exports {name} without HELP text"
            );
        }
    }
    let mut scraped = names_in(&worker_scrape);
    scraped.extend(names_in(&api_scrape));
    let missing: Vec<&String> = documented.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );

    // Health and readiness.
    let base = format!("http://127.0.0.1:{}", stack.workers[0].1);
    for path in ["/healthz", "/readyz"] {
        let r = stack
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let r = stack
            .http
            .get(format!("{}{path}", stack.api_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "api {path}");
    }
    stack.redis.kill();
    let r = stack
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "not ready without Redis");
    let r = stack
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "alive all the same");
    stack.redis.restart().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = stack
            .http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // JSON logs: every line parses, and the delivery lines carry the ids.
    let logs = stack.workers[0].0.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let delivered_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "delivered")
        .collect();
    assert_eq!(delivered_lines.len(), N, "{logs}");
    for l in delivered_lines {
        let text = l.to_string();
        for field in ["delivery_id", "job_id", "destination_id"] {
            assert!(text.contains(field), "{field} missing: {text}");
        }
        assert!(text.contains(&dest), "{text}");
    }
}
