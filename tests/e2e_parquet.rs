//! Parquet end to end: a destination with `format: PARQUET`, deliveries through the API
//! and real workers into a real Garage, and every object read back by an independent
//! reader, pyarrow (installed by `scripts/ensure-tools.sh --python` into
//! `$COURIER_TOOLS/venv` from `scripts/python-tools.txt`; `make test` runs it),
//! which reports the schema (names, order, types, nullability), the row groups, the codecs
//! and every value. A 1,000,000-row delivery by reference checks rows, row groups and the
//! worker's peak RSS.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::Stack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);

/// Reads the Parquet file at argv[1] with pyarrow and prints one JSON document: the
/// schema, the Parquet column types, row groups, codecs and (unless argv[2] is `summary`)
/// every row. Datetimes and dates print as ISO 8601; floats keep their exact value.
const READER: &str = r#"
import json, sys, datetime
import pyarrow.parquet as pq

f = pq.ParquetFile(sys.argv[1])
md = f.metadata
table = f.read()
out = {
    "schema": [[fld.name, str(fld.type), fld.nullable] for fld in table.schema],
    "parquet": [[c.name, c.physical_type, str(c.logical_type)] for c in f.schema],
    "num_rows": md.num_rows,
    "row_groups": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
    "codecs": sorted({md.row_group(i).column(j).compression
                      for i in range(md.num_row_groups) for j in range(md.num_columns)}),
}
if sys.argv[2] == "summary":
    out["last"] = table.slice(table.num_rows - 1).to_pylist()[0] if table.num_rows else None
    out["nulls"] = [table.column(i).null_count for i in range(table.num_columns)]
else:
    out["rows"] = table.to_pylist()

def iso(o):
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    raise TypeError(type(o))

print(json.dumps(out, default=iso, ensure_ascii=False, allow_nan=True))
"#;

/// The venv's python (see `scripts/ensure-tools.sh --python`).
fn python() -> PathBuf {
    let tools = std::env::var_os("COURIER_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/courier/tools"),
        PathBuf::from,
    );
    let python = tools.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/ensure-tools.sh --python (it installs pyarrow)",
        python.display()
    );
    python
}

/// What pyarrow reads in `bytes`.
fn pyarrow_read(bytes: &[u8], mode: &str) -> Value {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let out = Command::new(python())
        .args(["-c", READER])
        .arg(file.path())
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow could not read the object (a venv without pyarrow needs \
         scripts/ensure-tools.sh --python): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn parquet_destination(stack: &Stack, prefix: &str, parquet: Option<Value>) -> Value {
    let mut body = stack.destination_body("PARQUET", "NONE", prefix);
    if let Some(p) = parquet {
        body["parquet"] = p;
    }
    body
}

/// Posts a delivery and waits for its final record.
async fn deliver(stack: &Stack, body: &Value) -> Value {
    let (s, resp) = stack.post("/api/v1/deliveries", body).await;
    assert_eq!(s, 202, "{resp}");
    stack.wait_final(resp["id"].as_str().unwrap(), WAIT).await
}

/// The object at `key`, checked to be a Parquet object as the record says.
async fn parquet_object(stack: &Stack, record: &Value, key: &str) -> Vec<u8> {
    assert_eq!(record["status"], "DELIVERED", "{record}");
    assert_eq!(record["key"], key);
    assert_eq!(record["format"], "PARQUET");
    let obj = stack.get_object(key).await;
    assert_eq!(obj.content_type(), Some("application/vnd.apache.parquet"));
    assert_eq!(
        obj.content_encoding(),
        None,
        "no gzip around a Parquet file"
    );
    let raw = obj.body.collect().await.unwrap().into_bytes().to_vec();
    assert_eq!(record["bytes"], raw.len() as u64);
    assert_eq!(&raw[..4], b"PAR1");
    assert_eq!(&raw[raw.len() - 4..], b"PAR1");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_the_types_and_every_awkward_value() {
    let stack = Stack::start(1).await;
    // The destination declares one column; the delivery declares three more.
    let dest = stack
        .create_destination(&parquet_destination(
            &stack,
            "pq/",
            Some(json!({"columnTypes": {"rooms": "DOUBLE"}})),
        ))
        .await;
    let rows = json!([
        {
            "hotel": "Hôtel \"Le Petit\", Paris", "id": i64::MIN, "score": 9.5, "rooms": 120,
            "open": true, "tags": ["a", {"b": null}], "note": null,
            "at": "2026-06-07T23:30:00.123456-02:00", "day": "2026-06-07", "doc": "x\"y",
            "empty": null
        },
        {
            "hotel": "Line\nbreak\r\n🦀 שלום 'q' \\ \t", "id": i64::MAX, "score": -1,
            "rooms": -3, "open": false, "doc": {"k": [1, 2.5, "z"]}
        },
        {"hotel": "", "id": 0, "score": 1e300, "rooms": 9007199254740992_i64, "at": null}
    ]);
    let body = json!({
        "destinationId": dest, "jobId": "job-pq", "partnerInventoryId": "INV-PQ",
        "completedAt": "2026-06-07T10:00:00Z",
        "columnTypes": {"at": "TIMESTAMP", "day": "DATE", "doc": "JSON"},
        "rows": rows
    });
    let record = deliver(&stack, &body).await;
    assert_eq!(record["rows"], 3);
    let raw = parquet_object(
        &stack,
        &record,
        "pq/mapping_results_INV-PQ_2026-06-07.parquet",
    )
    .await;
    let read = pyarrow_read(&raw, "rows");

    // Column order is the first row's keys; every column is nullable.
    assert_eq!(
        read["schema"],
        json!([
            ["hotel", "string", true],
            ["id", "int64", true],
            ["score", "double", true],
            ["rooms", "double", true],
            ["open", "bool", true],
            ["tags", "string", true],
            ["note", "string", true],
            ["at", "timestamp[us, tz=UTC]", true],
            ["day", "date32[day]", true],
            // A string column annotated JSON: pyarrow reads it as its JSON extension type.
            ["doc", "extension<arrow.json>", true],
            ["empty", "string", true],
        ])
    );
    assert_eq!(read["parquet"][9], json!(["doc", "BYTE_ARRAY", "JSON"]));
    assert_eq!(read["parquet"][7][1], "INT64");
    assert!(
        read["parquet"][7][2]
            .as_str()
            .unwrap()
            .contains("isAdjustedToUTC=true"),
        "{}",
        read["parquet"][7]
    );
    assert_eq!(read["parquet"][8], json!(["day", "INT32", "Date"]));
    assert_eq!(read["codecs"], json!(["ZSTD"]), "ZSTD is the default codec");
    assert_eq!(read["row_groups"], json!([3]));
    assert_eq!(
        read["rows"],
        json!([
            {
                "hotel": "Hôtel \"Le Petit\", Paris", "id": i64::MIN, "score": 9.5,
                "rooms": 120.0, "open": true, "tags": r#"["a",{"b":null}]"#, "note": null,
                "at": "2026-06-08T01:30:00.123456+00:00", "day": "2026-06-07",
                "doc": r#""x\"y""#, "empty": null
            },
            {
                "hotel": "Line\nbreak\r\n🦀 שלום 'q' \\ \t", "id": i64::MAX, "score": -1.0,
                "rooms": -3.0, "open": false, "tags": null, "note": null, "at": null,
                "day": null, "doc": r#"{"k":[1,2.5,"z"]}"#, "empty": null
            },
            {
                "hotel": "", "id": 0, "score": 1e300, "rooms": 9007199254740992.0,
                "open": null, "tags": null, "note": null, "at": null, "day": null,
                "doc": null, "empty": null
            }
        ])
    );
}

/// The codec is Parquet's own, inside the file. (`compression: GZIP` on a Parquet destination,
/// gzip around the file, is refused with a 422: `crates/producer/tests/bad_input.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_parquets_own_inside_the_file() {
    let stack = Stack::start(1).await;
    for (codec, reported) in [
        ("SNAPPY", "SNAPPY"),
        ("GZIP", "GZIP"),
        ("NONE", "UNCOMPRESSED"),
    ] {
        let prefix = format!("pq-{}/", codec.to_lowercase());
        let body = parquet_destination(&stack, &prefix, Some(json!({"compression": codec})));
        let dest = stack.create_destination(&body).await;
        let (s, view) = stack
            .get(&format!("/api/v1/delivery-destinations/{dest}"))
            .await;
        assert_eq!(s, 200);
        assert_eq!(view["format"], "PARQUET");
        assert_eq!(view["compression"], "NONE");
        assert_eq!(view["parquet"], json!({"compression": codec}));
        let rows: Vec<Value> = (0..50).map(|i| json!({"n": i, "t": "abc"})).collect();
        let record = deliver(
            &stack,
            &json!({
                "destinationId": dest, "jobId": format!("job-{codec}"),
                "partnerInventoryId": "INV-C", "completedAt": "2026-06-07T10:00:00Z",
                "rows": rows
            }),
        )
        .await;
        let key = format!("{prefix}mapping_results_INV-C_2026-06-07.parquet");
        let read = pyarrow_read(&parquet_object(&stack, &record, &key).await, "rows");
        assert_eq!(read["codecs"], json!([reported]), "{codec}");
        assert_eq!(read["num_rows"], 50);
        assert_eq!(read["rows"][49], json!({"n": 49, "t": "abc"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_fit_fails_the_delivery_naming_row_and_column() {
    let stack = Stack::start(1).await;
    let dest = stack
        .create_destination(&parquet_destination(&stack, "pq/", None))
        .await;
    // (A column type that names no column is refused up front with a 422:
    // `crates/producer/tests/bad_input.rs`.)
    let body = json!({
        "destinationId": dest, "jobId": "job-bad", "partnerInventoryId": "INV-BAD",
        "completedAt": "2026-06-07T10:00:00Z",
        "columnTypes": {"score": "INT64"},
        "rows": [{"score": 1}, {"score": 2}, {"score": "very secret text"}]
    });
    let record = deliver(&stack, &body).await;
    assert_eq!(record["status"], "FAILED", "{record}");
    assert_eq!(record["error"]["code"], "RenderFailed");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("row 3, column `score`: a string does not fit the column's type INT64"),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "values are never quoted: {message}"
    );
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1, "permanent");
    assert!(
        stack
            .object("pq/mapping_results_INV-BAD_2026-06-07.parquet")
            .await
            .is_none(),
        "nothing is delivered"
    );
}

/// `n` rows of NDJSON, gzip-compressed (the same rows as `tests/e2e_big.rs`).
fn ndjson_gz(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..n {
        writeln!(
            gz,
            r#"{{"hotelId":"H-{i}","name":"Hotel {i}, \"Grand\"","city":"Paris","score":{},"rooms":{},"open":{}}}"#,
            i % 10,
            i % 500,
            i % 2 == 0
        )
        .unwrap();
    }
    gz.finish().unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_by_reference_in_bounded_row_groups_and_memory() {
    const ROWS: usize = 1_000_000;
    const STAGING: &str = common::STAGING_BUCKET;
    let mut stack = Stack::start(0).await;
    let staging_key = stack.garage.bucket_with_key(STAGING).unwrap();
    stack.add_worker_with_env(&[
        ("COURIER_STAGING_BUCKET", STAGING.to_owned()),
        ("COURIER_STAGING_ENDPOINT", stack.garage.endpoint()),
        ("COURIER_STAGING_REGION", stack.garage.region().to_owned()),
        ("COURIER_STAGING_ACCESS_KEY_ID", staging_key.id.clone()),
        (
            "COURIER_STAGING_SECRET_ACCESS_KEY",
            staging_key.secret.clone(),
        ),
        ("COURIER_PART_SIZE_MB", "5".into()),
    ]);
    stack.wait_worker(0).await;
    stack
        .garage
        .client(&staging_key)
        .await
        .put_object()
        .bucket(STAGING)
        .key("acme/jobs/big.ndjson.gz")
        .body(ByteStream::from(ndjson_gz(ROWS)))
        .send()
        .await
        .unwrap();
    let dest = stack
        .create_destination(&parquet_destination(&stack, "big/", None))
        .await;
    let record = deliver(
        &stack,
        &json!({
            "destinationId": dest, "jobId": "job-big", "partnerInventoryId": "INV-BIG",
            "completedAt": "2026-06-07T10:00:00Z",
            "rowsUrl": format!("s3://{STAGING}/acme/jobs/big.ndjson.gz")
        }),
    )
    .await;
    assert_eq!(record["rows"], ROWS as u64, "{record}");
    let peak = peak_rss_kib(stack.workers[0].0.child.id());
    let raw = parquet_object(
        &stack,
        &record,
        "big/mapping_results_INV-BIG_2026-06-07.parquet",
    )
    .await;
    println!(
        "1,000,000-row Parquet: {} bytes, worker peak RSS {peak} KiB",
        raw.len()
    );
    assert!(
        peak < 100 * 1024,
        "worker peak RSS {peak} KiB is over 100 MiB"
    );

    let read = pyarrow_read(&raw, "summary");
    assert_eq!(read["num_rows"], ROWS as u64);
    // Row groups of courier_core::render::MAX_ROW_GROUP_ROWS (131,072) rows, the rest last.
    let mut groups = vec![json!(131_072); 7];
    groups.push(json!(ROWS - 7 * 131_072));
    assert_eq!(read["row_groups"], Value::Array(groups));
    assert_eq!(
        read["schema"],
        json!([
            ["hotelId", "string", true],
            ["name", "string", true],
            ["city", "string", true],
            ["score", "int64", true],
            ["rooms", "int64", true],
            ["open", "bool", true],
        ])
    );
    assert_eq!(read["nulls"], json!([0, 0, 0, 0, 0, 0]));
    assert_eq!(
        read["last"],
        json!({
            "hotelId": "H-999999", "name": "Hotel 999999, \"Grand\"", "city": "Paris",
            "score": 9, "rooms": 499, "open": false
        })
    );
}
