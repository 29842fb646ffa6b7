//! Staging big results: an upstream job with more rows than fit a request uploads them as
//! NDJSON to the fleet's staging store and enqueues a delivery that names them (`rowsUrl`).

use std::path::Path;

use courier_core::TenantId;
use courier_core::delivery::RowsUrl;
use courier_core::destination::WriteOptions;
use courier_s3::S3Failure;
use courier_s3::stream::{ObjectTarget, upload_reader};

/// The fleet's staging bucket and a client that may write to it.
#[derive(Debug, Clone)]
pub struct StagingStore {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl StagingStore {
    /// Uploads the NDJSON file at `path` (gzip if its name ends in `.gz`) under `{tenant}/`
    /// (the only place the fleet reads `tenant`'s staged rows from) and returns the
    /// reference to put in one of `tenant`'s deliveries' `rowsUrl`.
    pub async fn stage_file(&self, tenant: &TenantId, path: &Path) -> Result<RowsUrl, StageError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| {
                n.replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                    "_",
                )
            })
            .unwrap_or_else(|| "rows.ndjson".into());
        let key = format!("{tenant}/{}-{name}", ulid::Ulid::new());
        let file = tokio::fs::File::open(path).await?;
        let target = ObjectTarget {
            bucket: &self.bucket,
            key: &key,
            content_type: "application/x-ndjson",
            content_encoding: None,
            write: &WriteOptions::default(),
        };
        upload_reader(&self.client, &target, file, 8 * 1024 * 1024).await?;
        RowsUrl::parse(&format!("s3://{}/{key}", self.bucket)).map_err(StageError::Bucket)
    }
}

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("reading the rows file: {0}")]
    Io(#[from] std::io::Error),
    #[error("uploading to the staging store: {0}")]
    Upload(#[from] S3Failure),
    #[error("the staging bucket: {0}")]
    Bucket(String),
}
