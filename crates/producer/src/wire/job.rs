//! The "job completed" request (`POST /api/v1/deliveries`, `courier enqueue`) and its
//! validation into core's [`JobCompleted`], whose rows are inline or a reference, never both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::delivery::{
    JobCompleted, MAX_COLUMNS, MAX_ID_LEN, PartnerInventoryId, RowsSource, RowsUrl,
};
use courier_core::format::{ColumnTypes, check_column_types};
use courier_core::rows::{InlineRows, RowsShape};
use courier_core::{DestinationId, ValidationErrors};
use serde::Deserialize;
use utoipa::ToSchema;

use super::enums::{ColumnType, column_types_to_core};

/// The body of `POST /api/v1/deliveries` (and the input of `courier enqueue`), as received.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobCompletedRequest {
    #[schema(example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    pub destination_id: String,
    #[schema(example = "job-42")]
    pub job_id: String,
    #[schema(example = "INV-1234")]
    pub partner_inventory_id: String,
    #[schema(format = DateTime, example = "2026-06-07T10:00:00Z")]
    pub completed_at: String,
    #[serde(default)]
    #[schema(example = json!(["hotel", "score"]))]
    pub columns: Option<Vec<String>>,
    /// The rows inline, for results that fit the request size limit (8 MiB by default).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>, example = json!([{"hotel": "A", "score": 1}]))]
    pub rows: Option<InlineRows>,
    /// Or a reference to the rows, for big results: NDJSON (gzip if the name ends in
    /// `.gz`) at `s3://bucket/key` in the fleet's staging store, or at an http(s) URL.
    /// Refused (422) for a batched destination, whose windows hold inline rows only.
    #[serde(default)]
    #[schema(example = "s3://courier-staging/jobs/job-42.ndjson.gz")]
    pub rows_url: Option<String>,
    /// Parquet column types by column name (`STRING`, `INT64`, `DOUBLE`, `BOOLEAN`,
    /// `TIMESTAMP`, `DATE`, `JSON`), over the destination's `parquet.columnTypes`; each must
    /// name one of the columns (when they are known). Other formats ignore them.
    #[serde(default)]
    #[schema(example = json!({"score": "DOUBLE"}))]
    pub column_types: Option<BTreeMap<String, ColumnType>>,
}

impl JobCompletedRequest {
    /// Validates every field, reporting each problem under its path (`rows[3]`, `columns[0]`).
    /// Columns come from `columns` or else from the keys of the first row, in order.
    pub fn validate(self) -> Result<JobCompleted, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let destination_id =
            errors.check("destinationId", DestinationId::parse(&self.destination_id));
        let job_id = self.job_id.trim().to_owned();
        if job_id.is_empty() || job_id.len() > MAX_ID_LEN || job_id.chars().any(char::is_control) {
            errors.push(
                "jobId",
                format!("must be 1 to {MAX_ID_LEN} characters without control characters"),
            );
        }
        let partner_inventory_id = errors.check(
            "partnerInventoryId",
            PartnerInventoryId::parse(&self.partner_inventory_id),
        );
        let completed_at = errors.check(
            "completedAt",
            DateTime::parse_from_rfc3339(&self.completed_at)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    format!("must be an RFC 3339 timestamp such as 2026-06-07T10:00:00Z ({e})")
                }),
        );

        let rows_url = match (&self.rows, self.rows_url.as_deref()) {
            (Some(_), Some(_)) => {
                errors.push("rowsUrl", "give either rows or rowsUrl, not both");
                None
            }
            (None, None) => {
                errors.push(
                    "rows",
                    "is required (or rowsUrl, a reference to NDJSON rows, for big results)",
                );
                None
            }
            (None, Some(u)) => errors.check("rowsUrl", RowsUrl::parse(u)),
            (Some(_), None) => None,
        };
        let rows = self.rows.unwrap_or_default();
        let shape = match rows.check() {
            Ok(shape) => shape,
            Err(problems) => {
                for p in problems {
                    match p.index {
                        Some(i) => errors.push(
                            format!("rows[{i}]"),
                            format!("must be a JSON object, found {}", p.found),
                        ),
                        None => errors.push(
                            "rows",
                            format!("must be an array of JSON objects, found {}", p.found),
                        ),
                    }
                }
                RowsShape::default()
            }
        };

        let columns = match self.columns {
            Some(cols) => {
                check_columns(&cols, &mut errors);
                cols
            }
            None => shape.first_keys,
        };
        let column_types = column_types_to_core(self.column_types.unwrap_or_default());
        check_column_types_name_columns(&column_types, &columns, &mut errors);
        if columns.len() > MAX_COLUMNS {
            errors.push(
                "columns",
                format!("at most {MAX_COLUMNS} columns are supported"),
            );
        }

        match (destination_id, partner_inventory_id, completed_at) {
            (Some(destination_id), Some(partner_inventory_id), Some(completed_at))
                if errors.is_empty() =>
            {
                let rows = match rows_url {
                    Some(url) => RowsSource::Url(url),
                    None => RowsSource::Inline {
                        rows,
                        count: shape.count,
                    },
                };
                Ok(JobCompleted {
                    destination_id,
                    job_id,
                    partner_inventory_id,
                    completed_at,
                    columns,
                    rows,
                    column_types,
                })
            }
            _ => Err(errors),
        }
    }
}

/// `columnTypes` names no empty column and, when the columns are known, only columns. With
/// rows by reference and no `columns`, only the worker knows the columns.
fn check_column_types_name_columns(
    types: &ColumnTypes,
    columns: &[String],
    errors: &mut ValidationErrors,
) {
    errors.check("columnTypes", check_column_types(types));
    if columns.is_empty() {
        return;
    }
    for name in types
        .keys()
        .filter(|n| !n.is_empty() && !columns.contains(n))
    {
        errors.push(
            format!("columnTypes.{name}"),
            "is not one of the columns (`columns`, or the first row's keys)",
        );
    }
}

fn check_columns(cols: &[String], errors: &mut ValidationErrors) {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in cols.iter().enumerate() {
        if c.is_empty() {
            errors.push(format!("columns[{i}]"), "must not be empty");
        } else if !seen.insert(c.as_str()) {
            errors.push(
                format!("columns[{i}]"),
                format!("`{c}` appears more than once"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde_json::Value;

    use super::*;

    fn body() -> Value {
        json!({
            "destinationId": DestinationId::generate().to_string(),
            "jobId": "job-42",
            "partnerInventoryId": "INV-1234",
            "completedAt": "2026-06-07T10:00:00Z",
            "rows": [{"hotel": "A", "score": 1}, {"score": 2, "hotel": "B", "extra": true}]
        })
    }

    fn parse(v: Value) -> Result<JobCompleted, ValidationErrors> {
        serde_json::from_value::<JobCompletedRequest>(v)
            .unwrap()
            .validate()
    }

    #[test]
    fn columns_default_to_the_first_rows_keys_in_order() {
        let job = parse(body()).unwrap();
        assert_eq!(job.columns, ["hotel", "score"]);
        assert_eq!(job.rows.count(), 2);
    }

    #[test]
    fn column_types_must_name_columns_when_the_columns_are_known() {
        use courier_core::format::ColumnType as CoreColumnType;
        let mut b = body();
        b["columnTypes"] = json!({"score": "DOUBLE"});
        let job = parse(b.clone()).unwrap();
        assert_eq!(job.column_types.get("score"), Some(&CoreColumnType::Double));

        b["columnTypes"] = json!({"scor": "DOUBLE", "": "INT64"});
        let errs = parse(b.clone()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["columnTypes", "columnTypes.scor"]);

        // Rows by reference without `columns`: only the worker knows the columns.
        b.as_object_mut().unwrap().remove("rows");
        b["rowsUrl"] = "https://example.com/rows.ndjson".into();
        b["columnTypes"] = json!({"anything": "DATE"});
        assert_eq!(parse(b.clone()).unwrap().column_types.len(), 1);

        b["columnTypes"] = json!({"a": "DECIMAL"});
        assert!(serde_json::from_value::<JobCompletedRequest>(b).is_err());
    }

    #[test]
    fn explicit_columns_win() {
        let mut b = body();
        b["columns"] = json!(["score", "extra", "hotel"]);
        assert_eq!(parse(b).unwrap().columns, ["score", "extra", "hotel"]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut b = body();
        b["destinationId"] = "nope".into();
        b["partnerInventoryId"] = "INV/1".into();
        b["completedAt"] = "yesterday".into();
        b["rows"] = json!([{"a": 1}, 5, "x"]);
        b["columns"] = json!(["a", "a", ""]);
        let errs = parse(b).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "destinationId",
                "partnerInventoryId",
                "completedAt",
                "rows[1]",
                "rows[2]",
                "columns[1]",
                "columns[2]"
            ]
        );
        assert!(errs.0[3].message.contains("a number"));
    }

    #[test]
    fn rows_that_are_not_an_array_are_named_as_rows() {
        let mut b = body();
        b["rows"] = json!({"a": 1});
        let errs = parse(b).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "rows");
        assert!(errs.0[0].message.contains("found an object"), "{errs}");
    }

    #[test]
    fn missing_and_unknown_fields_fail_to_decode() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("rows");
        let errs = parse(b).unwrap_err();
        assert_eq!(errs.0[0].field, "rows");
        let mut b = body();
        b.as_object_mut().unwrap().remove("jobId");
        let e = serde_json::from_value::<JobCompletedRequest>(b).unwrap_err();
        assert!(e.to_string().contains("missing field `jobId`"), "{e}");
        let mut b = body();
        b["priority"] = 1.into();
        let e = serde_json::from_value::<JobCompletedRequest>(b).unwrap_err();
        assert!(e.to_string().contains("unknown field `priority`"), "{e}");
    }

    #[test]
    fn completed_at_keeps_the_instant() {
        let mut b = body();
        b["completedAt"] = "2026-06-08T01:30:00+02:00".into();
        let job = parse(b).unwrap();
        assert_eq!(job.completed_at.to_rfc3339(), "2026-06-07T23:30:00+00:00");
    }

    #[test]
    fn rows_or_rows_url_but_not_both() {
        let base = json!({
            "destinationId": DestinationId::generate().to_string(),
            "jobId": "j", "partnerInventoryId": "I", "completedAt": "2026-06-07T10:00:00Z",
        });
        let parse = |v: Value| {
            serde_json::from_value::<JobCompletedRequest>(v)
                .unwrap()
                .validate()
        };
        let mut by_ref = base.clone();
        by_ref["rowsUrl"] = "s3://staging/x.ndjson".into();
        let job = parse(by_ref.clone()).unwrap();
        assert_eq!(job.rows.count(), 0);
        assert!(
            matches!(&job.rows, RowsSource::Url(u) if u.as_str() == "s3://staging/x.ndjson"),
            "{:?}",
            job.rows
        );
        by_ref["rows"] = json!([]);
        assert_eq!(parse(by_ref).unwrap_err().0[0].field, "rowsUrl");
        assert_eq!(parse(base).unwrap_err().0[0].field, "rows");
    }
}
