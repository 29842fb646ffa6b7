//! The result rows every measurement uses, and the request bodies that carry them.
//!
//! A row looks like a mapping job's output:
//! `{"hotelId":"H-123","name":"Hotel 123","city":"Paris","score":8.5,"rooms":120,"open":true}`
//! (about 95 bytes of JSON, 60 bytes of CSV).

use courier_core::delivery::Row;
use serde_json::{Value, json};

const CITIES: [&str; 8] = [
    "Paris",
    "Kyoto",
    "Lisbon",
    "Montréal",
    "Cape Town",
    "Reykjavík",
    "Lima",
    "Hanoi",
];

/// Row number `i`; different rows differ in every column.
pub fn row(i: usize) -> Row {
    let Value::Object(map) = json!({
        "hotelId": format!("H-{i}"),
        "name": format!("Hotel {i}"),
        "city": CITIES[i % CITIES.len()],
        "score": (i % 91) as f64 / 10.0 + 1.0,
        "rooms": 10 + i % 490,
        "open": !i.is_multiple_of(7),
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

/// The columns of [`row`], in order.
pub fn columns() -> Vec<String> {
    row(0).keys().cloned().collect()
}

/// Rows `0..n`.
pub fn rows(n: usize) -> Vec<Row> {
    (0..n).map(row).collect()
}

/// A `POST /api/v1/deliveries` body for `n` rows, built by splicing the serialized rows into
/// the envelope, so that enqueueing many copies does not re-serialize them every time.
#[derive(Debug, Clone)]
pub struct JobBodies {
    destination_id: String,
    rows_json: String,
}

impl JobBodies {
    pub fn new(destination_id: &str, n: usize) -> Self {
        let rows_json = serde_json::to_string(&rows(n)).expect("rows serialize");
        JobBodies {
            destination_id: destination_id.to_owned(),
            rows_json,
        }
    }

    /// The body of job `i`; its partner inventory id (and so its object key) is unique.
    pub fn body(&self, tag: &str, i: usize) -> Vec<u8> {
        let envelope = json!({
            "destinationId": self.destination_id,
            "jobId": format!("bench-{tag}-{i}"),
            "partnerInventoryId": format!("BENCH-{tag}-{i}"),
            "completedAt": "2026-06-07T10:00:00Z",
        })
        .to_string();
        let mut body = Vec::with_capacity(envelope.len() + self.rows_json.len() + 10);
        body.extend_from_slice(&envelope.as_bytes()[..envelope.len() - 1]);
        body.extend_from_slice(br#","rows":"#);
        body.extend_from_slice(self.rows_json.as_bytes());
        body.push(b'}');
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_with_distinct_keys() {
        let bodies = JobBodies::new("dst_x", 3);
        let a: Value = serde_json::from_slice(&bodies.body("t", 1)).unwrap();
        let b: Value = serde_json::from_slice(&bodies.body("t", 2)).unwrap();
        assert_eq!(a["rows"].as_array().unwrap().len(), 3);
        assert_eq!(a["destinationId"], "dst_x");
        assert_ne!(a["partnerInventoryId"], b["partnerInventoryId"]);
        assert_eq!(
            columns(),
            ["hotelId", "name", "city", "score", "rooms", "open"]
        );
    }
}
