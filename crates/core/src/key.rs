//! Where a delivered file lands: `{pathPrefix}mapping_results_{partnerInventoryId}_{yyyy-MM-dd}.{ext}`.
//!
//! The key is a pure function of the destination and the job, so a retried or replayed
//! delivery overwrites the same object instead of leaving a second copy behind.

use chrono::{DateTime, Utc};

use crate::delivery::PartnerInventoryId;
use crate::destination::PathPrefix;
use crate::{Compression, Format};

/// The object key of one delivery. The date is `completed_at`'s calendar day in UTC.
pub fn object_key(
    prefix: &PathPrefix,
    partner_inventory_id: &PartnerInventoryId,
    completed_at: DateTime<Utc>,
    format: Format,
    compression: Compression,
) -> String {
    let gz = match compression {
        Compression::None => "",
        Compression::Gzip => ".gz",
    };
    format!(
        "{prefix}mapping_results_{id}_{date}.{ext}{gz}",
        prefix = prefix.as_str(),
        id = partner_inventory_id.as_str(),
        date = completed_at.format("%Y-%m-%d"),
        ext = format.extension(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, TimeZone};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn inv(s: &str) -> PartnerInventoryId {
        PartnerInventoryId::parse(s).unwrap()
    }

    /// The three rows of the pathPrefix table on the Mapping.Travel page.
    #[test]
    fn path_prefix_table() {
        let when = at("2026-06-07T10:00:00Z");
        let cases = [
            ("", "mapping_results_INV-1234_2026-06-07.csv"),
            (
                "incoming/",
                "incoming/mapping_results_INV-1234_2026-06-07.csv",
            ),
            (
                "acme/prod/exports/",
                "acme/prod/exports/mapping_results_INV-1234_2026-06-07.csv",
            ),
        ];
        for (prefix, expected) in cases {
            let prefix = PathPrefix::parse(prefix).unwrap();
            let key = object_key(
                &prefix,
                &inv("INV-1234"),
                when,
                Format::Csv,
                Compression::None,
            );
            assert_eq!(key, expected);
        }
    }

    #[test]
    fn extension_per_format_and_gzip() {
        let p = PathPrefix::parse("in/").unwrap();
        let when = at("2026-06-07T10:00:00Z");
        let got: Vec<String> = Format::ALL
            .iter()
            .flat_map(|f| {
                [Compression::None, Compression::Gzip]
                    .map(|c| object_key(&p, &inv("X"), when, *f, c))
            })
            .collect();
        assert_eq!(
            got,
            [
                "in/mapping_results_X_2026-06-07.csv",
                "in/mapping_results_X_2026-06-07.csv.gz",
                "in/mapping_results_X_2026-06-07.json",
                "in/mapping_results_X_2026-06-07.json.gz",
                "in/mapping_results_X_2026-06-07.ndjson",
                "in/mapping_results_X_2026-06-07.ndjson.gz",
                "in/mapping_results_X_2026-06-07.xlsx",
                "in/mapping_results_X_2026-06-07.xlsx.gz",
                "in/mapping_results_X_2026-06-07.parquet",
                // Not reached: a Parquet destination's compression is always NONE.
                "in/mapping_results_X_2026-06-07.parquet.gz",
            ]
        );
    }

    /// The date is the UTC day, whatever offset `completedAt` was written with.
    #[test]
    fn date_is_taken_in_utc() {
        let p = PathPrefix::parse("").unwrap();
        let key = |t: DateTime<Utc>| object_key(&p, &inv("I"), t, Format::Csv, Compression::None);
        // Last instant of a UTC day and first of the next.
        assert_eq!(
            key(at("2026-06-07T23:59:59.999Z")),
            "mapping_results_I_2026-06-07.csv"
        );
        assert_eq!(
            key(at("2026-06-08T00:00:00Z")),
            "mapping_results_I_2026-06-08.csv"
        );
        // 01:30 in UTC+02:00 is still the previous day in UTC.
        assert_eq!(
            key(at("2026-06-08T01:30:00+02:00")),
            "mapping_results_I_2026-06-07.csv"
        );
        // 20:00 in UTC-05:00 is already the next day in UTC.
        let tz = FixedOffset::west_opt(5 * 3600).unwrap();
        let local = tz.with_ymd_and_hms(2026, 12, 31, 20, 0, 0).unwrap();
        assert_eq!(
            key(local.with_timezone(&Utc)),
            "mapping_results_I_2027-01-01.csv"
        );
        // Leap day.
        assert_eq!(
            key(at("2028-02-29T12:00:00Z")),
            "mapping_results_I_2028-02-29.csv"
        );
    }
}
