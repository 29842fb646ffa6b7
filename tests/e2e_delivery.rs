//! Job completed → the right file in the bucket: every format, through the API and the
//! CLI, on a real Redis and a real Garage, with two real worker processes.

mod common;

use std::io::{Cursor, Read};
use std::time::Duration;

use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
use common::{BUCKET, Stack, metric_sum};
use serde_json::{Value, json};

/// Rows with the awkward values a real result has.
fn rows() -> Value {
    json!([
        {
            "hotel": "Hôtel \"Le Petit\", Paris",
            "score": 9.5,
            "rooms": 120,
            "open": true,
            "tags": ["a", "b"],
            "note": null,
            "geo": {"lat": 48.85}
        },
        {"hotel": "Line\nbreak 🦀 שלום", "score": -1, "rooms": 0, "open": false}
    ])
}

const COLUMNS: [&str; 7] = ["hotel", "score", "rooms", "open", "tags", "note", "geo"];

/// The expected text of every cell (CSV's view).
fn expected_text() -> Vec<Vec<&'static str>> {
    vec![
        COLUMNS.to_vec(),
        vec![
            "Hôtel \"Le Petit\", Paris",
            "9.5",
            "120",
            "true",
            r#"["a","b"]"#,
            "",
            r#"{"lat":48.85}"#,
        ],
        vec!["Line\nbreak 🦀 שלום", "-1", "0", "false", "", "", ""],
    ]
}

/// The expected objects (JSON's and NDJSON's view): every column, missing ones null.
fn expected_objects() -> Vec<Value> {
    vec![
        json!({"hotel": "Hôtel \"Le Petit\", Paris", "score": 9.5, "rooms": 120, "open": true, "tags": ["a", "b"], "note": null, "geo": {"lat": 48.85}}),
        json!({"hotel": "Line\nbreak 🦀 שלום", "score": -1, "rooms": 0, "open": false, "tags": null, "note": null, "geo": null}),
    ]
}

fn expected_xlsx() -> Vec<Vec<Data>> {
    let s = |t: &str| Data::String(t.to_owned());
    vec![
        COLUMNS.iter().map(|c| s(c)).collect(),
        vec![
            s("Hôtel \"Le Petit\", Paris"),
            Data::Float(9.5),
            Data::Float(120.0),
            Data::Bool(true),
            s(r#"["a","b"]"#),
            Data::Empty,
            s(r#"{"lat":48.85}"#),
        ],
        vec![
            s("Line\nbreak 🦀 שלום"),
            Data::Float(-1.0),
            Data::Float(0.0),
            Data::Bool(false),
            Data::Empty,
            Data::Empty,
            Data::Empty,
        ],
    ]
}

fn job(destination: &str, inventory: &str) -> Value {
    json!({
        "destinationId": destination,
        "jobId": format!("job-{inventory}"),
        "partnerInventoryId": inventory,
        // 23:30 at UTC-02:00 is 01:30 the next day in UTC: the key must say 2026-06-08.
        "completedAt": "2026-06-07T23:30:00-02:00",
        "rows": rows()
    })
}

/// Reads the object back and checks key, headers, record and every cell.
async fn check_delivered(stack: &Stack, record: &Value, key: &str, format: &str, gzip: bool) {
    assert_eq!(record["status"], "DELIVERED", "{record}");
    assert_eq!(record["key"], key, "{record}");
    assert_eq!(record["bucket"], BUCKET);
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1, "{record}");
    assert_eq!(record["attempts"][0]["outcome"], "DELIVERED");
    assert_eq!(record["rows"], 2);

    let obj = stack.get_object(key).await;
    let content_type = obj.content_type().unwrap_or_default().to_owned();
    let content_encoding = obj.content_encoding().map(str::to_owned);
    let etag = obj.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let raw = obj.body.collect().await.unwrap().into_bytes().to_vec();
    assert_eq!(
        record["bytes"],
        raw.len() as u64,
        "record counts the uploaded bytes"
    );
    assert_eq!(record["etag"], etag.as_str());
    // One PutObject: the recorded checksum is the MD5 of the bytes that landed.
    let md5: String = md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(&raw))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(record["checksum"]["algorithm"], "MD5", "{record}");
    assert_eq!(record["checksum"]["value"], md5.as_str(), "{record}");
    let expected_type = match format {
        "CSV" => "text/csv; charset=utf-8",
        "JSON" => "application/json",
        "NDJSON" => "application/x-ndjson",
        "XLSX" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => unreachable!(),
    };
    assert_eq!(content_type, expected_type, "{key}");
    let bytes = if gzip {
        assert_eq!(content_encoding.as_deref(), Some("gzip"), "{key}");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        assert_eq!(content_encoding, None, "{key}");
        raw
    };
    match format {
        "CSV" => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(&bytes[..]);
            let got: Vec<Vec<String>> = reader
                .records()
                .map(|r| r.unwrap().iter().map(str::to_owned).collect())
                .collect();
            assert_eq!(got, expected_text(), "{key}");
        }
        "JSON" => {
            let got: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, expected_objects(), "{key}");
            // Column order is kept in each object.
            let keys: Vec<&String> = got[0].as_object().unwrap().keys().collect();
            assert_eq!(keys, COLUMNS);
        }
        "NDJSON" => {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.ends_with('\n'));
            let got: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(got, expected_objects(), "{key}");
        }
        "XLSX" => {
            let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes)).unwrap();
            assert_eq!(wb.sheet_names(), ["Sheet1"]);
            let range = wb.worksheet_range("Sheet1").unwrap();
            let got: Vec<Vec<Data>> = (0..3u32)
                .map(|r| {
                    (0..7u32)
                        .map(|c| range.get_value((r, c)).cloned().unwrap_or(Data::Empty))
                        .collect()
                })
                .collect();
            assert_eq!(got, expected_xlsx(), "{key}");
            assert_eq!(range.height(), 3, "no extra rows");
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_lands_at_its_key_with_every_cell() {
    let stack = Stack::start(2).await;
    let cases = [
        ("CSV", "NONE", "csv"),
        ("CSV", "GZIP", "csv.gz"),
        ("JSON", "NONE", "json"),
        ("JSON", "GZIP", "json.gz"),
        ("NDJSON", "NONE", "ndjson"),
        ("NDJSON", "GZIP", "ndjson.gz"),
        ("XLSX", "NONE", "xlsx"),
        ("XLSX", "GZIP", "xlsx.gz"),
    ];
    let mut pending = Vec::new();
    for (i, (format, compression, ext)) in cases.iter().enumerate() {
        let prefix = format!(
            "acme/{}-{}/",
            format.to_lowercase(),
            compression.to_lowercase()
        );
        let dest = stack
            .create_destination(&stack.destination_body(format, compression, &prefix))
            .await;
        let inventory = format!("INV-{i}");
        let (status, body) = stack
            .post("/api/v1/deliveries", &job(&dest, &inventory))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "QUEUED");
        let key = format!("{prefix}mapping_results_{inventory}_2026-06-08.{ext}");
        pending.push((
            body["id"].as_str().unwrap().to_owned(),
            key,
            *format,
            *compression == "GZIP",
        ));
    }
    for (id, key, format, gzip) in &pending {
        let record = stack.wait_final(id, Duration::from_secs(60)).await;
        check_delivered(&stack, &record, key, format, *gzip).await;
    }

    // The workers count what they delivered, by format, on their metrics listeners.
    let mut delivered = 0.0;
    let mut csv = 0.0;
    for i in 0..stack.workers.len() {
        let text = stack.worker_metrics(i).await;
        delivered += metric_sum(
            &text,
            "courier_deliveries_total",
            &[("outcome", "delivered")],
        );
        csv += metric_sum(
            &text,
            "courier_deliveries_total",
            &[("outcome", "delivered"), ("format", "csv")],
        );
    }
    assert_eq!(delivered, cases.len() as f64);
    assert_eq!(csv, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enqueues_rows_from_a_file_or_stdin() {
    let stack = Stack::start(1).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "cli/"))
        .await;

    // NDJSON from a file.
    let id = stack.enqueue_file(
        &dest,
        "job-cli",
        "INV-CLI",
        "2026-06-07T23:30:00-02:00",
        rows().as_array().unwrap(),
    );
    assert!(id.starts_with("dlv_"), "{id}");
    let file = stack.dir.path().join("job-cli.ndjson");
    let record = stack.wait_final(&id, Duration::from_secs(60)).await;
    check_delivered(
        &stack,
        &record,
        "cli/mapping_results_INV-CLI_2026-06-08.csv",
        "CSV",
        false,
    )
    .await;

    // A JSON array on stdin, with explicit column order.
    let mut child = stack
        .courier(&[
            "enqueue",
            "--tenant",
            "acme",
            "--destination",
            &dest,
            "--job-id",
            "job-stdin",
            "--partner-inventory-id",
            "INV-STDIN",
            "--completed-at",
            "2026-01-02T03:04:05Z",
            "--columns",
            "rooms,hotel",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(rows().to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let record = stack.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(record["status"], "DELIVERED", "{record}");
    let key = "cli/mapping_results_INV-STDIN_2026-01-02.csv";
    assert_eq!(record["key"], key);
    let obj = stack.get_object(key).await;
    let text = String::from_utf8(obj.body.collect().await.unwrap().to_vec()).unwrap();
    assert_eq!(
        text,
        "rooms,hotel\n120,\"Hôtel \"\"Le Petit\"\", Paris\"\n0,\"Line\nbreak 🦀 שלום\"\n"
    );

    // An unknown destination is refused and nothing is queued.
    let out = stack
        .courier(&[
            "enqueue",
            "--tenant",
            "acme",
            "--destination",
            "dst_01JAAAAAAAAAAAAAAAAAAAAAAA",
            "--job-id",
            "j",
            "--partner-inventory-id",
            "I",
            "--rows",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    // Another tenant's destination is as good as missing.
    let out = stack
        .courier(&[
            "enqueue",
            "--tenant",
            "globex",
            "--destination",
            &dest,
            "--job-id",
            "j",
            "--partner-inventory-id",
            "I",
            "--rows",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_at_once_with_the_store_error_code() {
    let stack = Stack::start(1).await;
    let mut body = stack.destination_body("CSV", "NONE", "");
    body["s3"]["bucket"] = "no-such-bucket".into();
    let dest = stack.create_destination(&body).await;
    let (status, resp) = stack.post("/api/v1/deliveries", &job(&dest, "INV-X")).await;
    assert_eq!(status, 202, "{resp}");
    let record = stack
        .wait_final(resp["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(record["status"], "FAILED", "{record}");
    assert_eq!(record["error"]["code"], "NoSuchBucket", "{record}");
    assert_eq!(
        record["attempts"].as_array().unwrap().len(),
        1,
        "a permanent error is not retried: {record}"
    );
    let text = stack.worker_metrics(0).await;
    assert_eq!(
        metric_sum(&text, "courier_deliveries_total", &[("outcome", "dead")]),
        1.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "courier_delivery_attempts_total",
            &[("class", "permanent")]
        ),
        1.0
    );
}

/// With `csv.neutralizeFormulas`, text cells a spreadsheet would run as formulas arrive with
/// a `'` in front; numbers stay numbers. Read back with the `csv` crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_destination_can_neutralize_formulas() {
    let stack = Stack::start(1).await;
    let mut body = stack.destination_body("CSV", "NONE", "safe/");
    body["csv"] = json!({"neutralizeFormulas": true});
    let dest = stack.create_destination(&body).await;
    let (status, shown) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["csv"], json!({"neutralizeFormulas": true}));

    let job = json!({
        "destinationId": dest,
        "jobId": "job-formulas",
        "partnerInventoryId": "INV-F",
        "completedAt": "2026-06-07T12:00:00Z",
        "columns": ["=name", "note", "delta", "text delta"],
        "rows": [
            {"=name": "=HYPERLINK(\"http://evil.example\",\"click\")", "note": "@SUM(A1:A9)", "delta": -3, "text delta": "-3"},
            {"=name": "+1+1", "note": "\tlead tab", "delta": 2.5, "text delta": "plain"},
            {"=name": "Hôtel = fine", "note": "\rcr", "delta": -1.5e-7, "text delta": null},
        ],
    });
    let (status, resp) = stack.post("/api/v1/deliveries", &job).await;
    assert_eq!(status, 202, "{resp}");
    let record = stack
        .wait_final(resp["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(record["status"], "DELIVERED", "{record}");
    let key = "safe/mapping_results_INV-F_2026-06-07.csv";
    assert_eq!(record["key"], key);
    let bytes = stack.object(key).await.unwrap();
    let got: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&bytes[..])
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        got,
        [
            ["'=name", "note", "delta", "text delta"],
            [
                "'=HYPERLINK(\"http://evil.example\",\"click\")",
                "'@SUM(A1:A9)",
                "-3",
                "'-3"
            ],
            ["'+1+1", "'\tlead tab", "2.5", "plain"],
            ["Hôtel = fine", "'\rcr", "-1.5e-7", ""],
        ]
    );
}

/// An idle worker takes a new delivery when it is announced, not at its next poll: with
/// polling every ten minutes (and apalis's fetch at each heartbeat, once a minute),
/// deliveries enqueued one after another, each once the one before was delivered (so the
/// worker is idle again), each land within half a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_a_new_delivery() {
    let mut stack = Stack::start(0).await;
    let w = stack.add_worker_with_env(&[
        ("COURIER_POLL_INTERVAL_MS", "600000".into()),
        ("COURIER_HEARTBEAT_SECS", "60".into()),
    ]);
    stack.wait_worker(w).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "wake/"))
        .await;
    for i in 0..3 {
        let id = stack
            .enqueue(&dest, &format!("job-wake-{i}"), &format!("INV-WAKE-{i}"))
            .await;
        stack
            .wait_status(&id, "DELIVERED", Duration::from_secs(30))
            .await;
    }
}
