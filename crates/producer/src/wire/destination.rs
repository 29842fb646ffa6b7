//! A destination on the wire: the request body of create, update and the unsaved connection
//! test ([`DestinationRequest`], validated into core's [`DestinationSpec`]; its `csv`
//! settings only with format `CSV`, its `parquet` settings only with `PARQUET`), and the destination as the API shows it
//! ([`DestinationView`]: no secret, the key id masked).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::batch::BatchSettings;
use courier_core::destination::{
    BucketName, Credentials, CredentialsMode as CoreCredentialsMode, Destination, DestinationSpec,
    EndpointUrl, ExternalId, PathPrefix, Region, RoleArn, RoleCredentials, S3Settings, Secret,
    StaticCredentials, WriteOptions, mask_access_key_id,
};
use courier_core::format::{CsvOptions, ParquetOptions, check_column_types};
use courier_core::write_options::{
    AccountId, CannedAcl, KmsKeyId, ObjectTags, ServerSideEncryption, StorageClass,
};
use courier_core::{
    Compression as CoreCompression, DestinationId, Format as CoreFormat, ValidationErrors,
};
use courier_store::DestinationHealth;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::enums::{
    ColumnType, Compression, CredentialsMode, DestinationStatus, DestinationType, Format,
    ParquetCompression, column_types_from_core, column_types_to_core,
};

/// The `s3` object of a destination request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Request {
    #[schema(example = "acme-mapping-results")]
    pub bucket: String,
    /// `STATIC`, `NONE`, `DEFAULT_CHAIN` or `ROLE`; see [`CredentialsMode`]. Without it:
    /// `STATIC` when keys are given, `ROLE` when `roleArn` is, else `NONE`.
    #[serde(default)]
    pub credentials: Option<CredentialsMode>,
    /// With `ROLE`: the role in your account that Courier assumes, with your tenant's
    /// `externalId` (see `GET /api/v1/tenant`).
    #[serde(default)]
    #[schema(example = "arn:aws:iam::123456789012:role/courier-delivery")]
    pub role_arn: Option<String>,
    /// Read-only: issued by Courier, one per tenant. Accepted only if it is your tenant's
    /// (so a destination read back can be sent again); any other value is refused.
    #[serde(default)]
    #[schema(read_only)]
    pub external_id: Option<String>,
    /// `AES256`, `aws:kms` or `aws:kms:dsse` (`x-amz-server-side-encryption`) on every object.
    #[serde(default)]
    #[schema(example = "aws:kms")]
    pub server_side_encryption: Option<String>,
    /// With `aws:kms` / `aws:kms:dsse`: the key id, alias (`alias/…`) or ARN; without it S3
    /// uses the bucket's default KMS key.
    #[serde(default)]
    #[schema(
        example = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )]
    pub kms_key_id: Option<String>,
    /// `STANDARD`, `REDUCED_REDUNDANCY`, `STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING`,
    /// `GLACIER`, `DEEP_ARCHIVE` or `GLACIER_IR`.
    #[serde(default)]
    #[schema(example = "STANDARD_IA")]
    pub storage_class: Option<String>,
    /// Object tags, key → value: at most 10; keys 1 to 128 and values 0 to 256 characters of
    /// letters, digits, spaces and `+ - = . _ : / @`; keys not starting with `aws:`.
    #[serde(default)]
    #[schema(example = json!({"source": "courier", "team": "data"}))]
    pub tags: Option<BTreeMap<String, String>>,
    /// `private`, `bucket-owner-read` or `bucket-owner-full-control` (`x-amz-acl`).
    #[serde(default)]
    #[schema(example = "bucket-owner-full-control")]
    pub canned_acl: Option<String>,
    /// The 12-digit account that must own the bucket, sent on every request
    /// (`x-amz-expected-bucket-owner`): a bucket that changed hands is refused, not written.
    #[serde(default)]
    #[schema(example = "123456789012")]
    pub expected_bucket_owner: Option<String>,
    #[schema(example = "eu-west-1")]
    pub region: String,
    #[serde(default)]
    #[schema(example = "AKIAIOSFODNN7EXAMPLE")]
    pub access_key_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only, format = Password)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    #[schema(example = "https://s3.eu-west-1.amazonaws.com")]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    #[schema(example = "incoming/")]
    pub path_prefix: Option<String>,
}

/// The body of `POST /api/v1/delivery-destinations`, as received.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRequest {
    #[serde(rename = "type")]
    pub kind: DestinationType,
    pub name: String,
    pub s3: S3Request,
    #[serde(default)]
    pub format: Format,
    /// gzip around the whole file; must be `NONE` with `PARQUET`, which compresses inside
    /// (see `parquet.compression`).
    #[serde(default)]
    pub compression: Compression,
    /// Only with `format: CSV`: spreadsheet safety (`neutralizeFormulas`).
    #[serde(default)]
    pub csv: Option<CsvRequest>,
    /// Only with `format: PARQUET`: the codec inside the file and declared column types.
    #[serde(default)]
    pub parquet: Option<ParquetRequest>,
    #[serde(default)]
    pub status: DestinationStatus,
    /// Batched delivery: every window's deliveries in one gzip NDJSON object (more when
    /// over `maxObjectBytes`) at `{pathPrefix}YYYY/MM/DD/HH/YYYY-MM-DD-HH-MM-SS-{id}.gz`.
    /// A batched destination must have `format: NDJSON` and `compression: GZIP`; other
    /// formats and compressions are refused.
    #[serde(default)]
    pub batch: Option<BatchRequest>,
}

/// The `batch` object of a destination request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    /// Length of a window in seconds, 5 to 3600; default 60.
    #[serde(default)]
    #[schema(example = 60, minimum = 5, maximum = 3600)]
    pub window_seconds: Option<u32>,
    /// Most NDJSON bytes (before gzip) in one object, at least 5 MiB (5242880) and at
    /// most 5 GiB; default 100 MiB. A window with more continues in further objects.
    #[serde(default)]
    #[schema(example = 104857600, minimum = 5242880)]
    pub max_object_bytes: Option<u64>,
}

/// Checks the batch settings against the format: batched objects are gzip NDJSON.
fn validate_batch(
    format: CoreFormat,
    compression: CoreCompression,
    batch: Option<BatchRequest>,
    errors: &mut ValidationErrors,
) -> Option<BatchSettings> {
    let batch = batch?;
    if format != CoreFormat::Ndjson {
        errors.push(
            "format",
            "must be NDJSON for a batched destination (its objects are gzip NDJSON)",
        );
    }
    if compression != CoreCompression::Gzip {
        errors.push(
            "compression",
            "must be GZIP for a batched destination (its objects are gzip NDJSON)",
        );
    }
    match BatchSettings::parse(batch.window_seconds, batch.max_object_bytes) {
        Ok(b) => Some(b),
        Err(problems) => {
            for (field, message) in problems {
                errors.push(field, message);
            }
            None
        }
    }
}

/// The `csv` object of a destination request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsvRequest {
    /// Spreadsheet safety against CSV injection (OWASP): a text cell (or column name)
    /// starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a `'` in front, so
    /// a spreadsheet shows it as text instead of running it as a formula. Numbers are never
    /// changed (`-3` stays a number), but the text `"-3"` becomes `'-3`. Default `false`:
    /// every cell is exactly the value sent.
    #[serde(default)]
    pub neutralize_formulas: bool,
}

/// Checks the CSV settings against the format: `csv` is refused for the other formats.
fn validate_csv(
    format: CoreFormat,
    csv: Option<CsvRequest>,
    errors: &mut ValidationErrors,
) -> CsvOptions {
    let Some(csv) = csv else {
        return CsvOptions::default();
    };
    if format != CoreFormat::Csv {
        errors.push("csv", "is only for destinations with format CSV");
    }
    CsvOptions {
        neutralize_formulas: csv.neutralize_formulas,
    }
}

/// The `parquet` object of a destination request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParquetRequest {
    /// The codec of the file's pages: `ZSTD` (default), `SNAPPY`, `GZIP` or `NONE`.
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Column name → `STRING`, `INT64`, `DOUBLE`, `BOOLEAN`, `TIMESTAMP`, `DATE` or `JSON`;
    /// undeclared columns are inferred. A delivery's `columnTypes` win over these.
    #[serde(default)]
    #[schema(example = json!({"score": "DOUBLE", "checkedAt": "TIMESTAMP"}))]
    pub column_types: Option<BTreeMap<String, ColumnType>>,
}

/// Checks the Parquet settings against the format: `compression` (gzip around the whole
/// file) is refused for Parquet, which compresses inside the file, and `parquet` is
/// refused for the other formats, so no setting silently means something else.
fn validate_parquet(
    format: CoreFormat,
    compression: CoreCompression,
    parquet: Option<ParquetRequest>,
    errors: &mut ValidationErrors,
) -> ParquetOptions {
    errors.check("compression", format.check_compression(compression));
    let Some(parquet) = parquet else {
        return ParquetOptions::default();
    };
    if format != CoreFormat::Parquet {
        errors.push("parquet", "is only for destinations with format PARQUET");
    }
    let column_types = column_types_to_core(parquet.column_types.unwrap_or_default());
    errors.check("parquet.columnTypes", check_column_types(&column_types));
    ParquetOptions {
        compression: parquet.compression.into(),
        column_types,
    }
}

/// Checks the write options, each under its field.
fn validate_write_options(s3: &mut S3Request, errors: &mut ValidationErrors) -> WriteOptions {
    fn field<T>(
        errors: &mut ValidationErrors,
        name: &str,
        value: Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        value.and_then(|v| errors.check(name, parse(&v)))
    }
    let write = WriteOptions {
        server_side_encryption: field(
            errors,
            "s3.serverSideEncryption",
            s3.server_side_encryption.take(),
            ServerSideEncryption::parse,
        ),
        kms_key_id: field(errors, "s3.kmsKeyId", s3.kms_key_id.take(), KmsKeyId::parse),
        storage_class: field(
            errors,
            "s3.storageClass",
            s3.storage_class.take(),
            StorageClass::parse,
        ),
        tags: s3
            .tags
            .take()
            .and_then(|t| errors.check("s3.tags", ObjectTags::parse(t)))
            .unwrap_or_default(),
        canned_acl: field(
            errors,
            "s3.cannedAcl",
            s3.canned_acl.take(),
            CannedAcl::parse,
        ),
        expected_bucket_owner: field(
            errors,
            "s3.expectedBucketOwner",
            s3.expected_bucket_owner.take(),
            AccountId::parse,
        ),
    };
    errors.check("s3.kmsKeyId", write.check());
    write
}

/// Checks `roleArn`, required with `ROLE`.
fn validate_role(
    role_arn: Option<String>,
    external_id: &ExternalId,
    errors: &mut ValidationErrors,
) -> Option<Credentials> {
    let Some(arn) = role_arn else {
        errors.push("s3.roleArn", "is required with credentials ROLE");
        return None;
    };
    errors
        .check("s3.roleArn", RoleArn::parse(&arn))
        .map(|role_arn| {
            Credentials::Role(RoleCredentials {
                role_arn,
                external_id: external_id.clone(),
            })
        })
}

/// Checks the credential fields: `credentials` defaults to `STATIC` when keys are given,
/// `ROLE` when a `roleArn` is, and `NONE` otherwise; keys come in pairs, and only with
/// `STATIC`; a `roleArn` only with `ROLE`. A client-sent `externalId` other than the
/// tenant's is refused (Courier issues it).
fn validate_credentials(
    s3: &mut S3Request,
    external_id: &ExternalId,
    errors: &mut ValidationErrors,
) -> Option<Credentials> {
    let access_key_id = s3.access_key_id.take();
    let secret = s3.secret_access_key.take();
    let role_arn = s3.role_arn.take();
    if let Some(sent) = s3.external_id.take()
        && sent != external_id.as_str()
    {
        errors.push(
            "s3.externalId",
            "is issued by Courier (one per tenant, see GET /api/v1/tenant) and cannot be \
             chosen; leave it out",
        );
    }
    let has_keys = access_key_id.is_some() || secret.is_some();
    let mode = s3
        .credentials
        .map(CoreCredentialsMode::from)
        .unwrap_or(if has_keys {
            CoreCredentialsMode::Static
        } else if role_arn.is_some() {
            CoreCredentialsMode::Role
        } else {
            CoreCredentialsMode::None
        });
    if mode == CoreCredentialsMode::Role {
        if has_keys {
            let field = if access_key_id.is_some() {
                "s3.accessKeyId"
            } else {
                "s3.secretAccessKey"
            };
            errors.push(
                field,
                "must not be given with credentials ROLE; Courier assumes the role with its                  own identity and never holds your keys",
            );
            return None;
        }
        return validate_role(role_arn, external_id, errors);
    }
    if role_arn.is_some() {
        errors.push("s3.roleArn", "is only used with credentials ROLE");
        return None;
    }
    match mode {
        CoreCredentialsMode::Static => match (access_key_id, secret) {
            (Some(id), Some(secret)) => {
                let mut ok = true;
                if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                    errors.push("s3.accessKeyId", "must be 1 to 128 printable characters");
                    ok = false;
                }
                if secret.expose().is_empty() || secret.expose().len() > 256 {
                    errors.push("s3.secretAccessKey", "must be 1 to 256 characters");
                    ok = false;
                }
                ok.then_some(Credentials::Static(StaticCredentials {
                    access_key_id: id,
                    secret_access_key: secret,
                }))
            }
            (id, _) => {
                let field = if id.is_some() {
                    "s3.secretAccessKey"
                } else {
                    "s3.accessKeyId"
                };
                errors.push(
                    field,
                    "is required: STATIC credentials need both accessKeyId and secretAccessKey",
                );
                None
            }
        },
        other => {
            if has_keys {
                let field = if access_key_id.is_some() {
                    "s3.accessKeyId"
                } else {
                    "s3.secretAccessKey"
                };
                errors.push(
                    field,
                    format!(
                        "must not be given with credentials {}; keys are only used with STATIC",
                        if other == CoreCredentialsMode::None {
                            "NONE"
                        } else {
                            "DEFAULT_CHAIN"
                        }
                    ),
                );
                return None;
            }
            Some(if other == CoreCredentialsMode::None {
                Credentials::Anonymous
            } else {
                Credentials::DefaultChain
            })
        }
    }
}

impl DestinationRequest {
    /// Checks every field and reports all problems at once, each under its field path.
    /// `external_id` is the tenant's, which a `ROLE` destination is assumed with.
    pub fn validate(
        mut self,
        external_id: &ExternalId,
    ) -> Result<DestinationSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push("name", "must be 1 to 200 characters");
        }
        let bucket = errors.check("s3.bucket", BucketName::parse(&self.s3.bucket));
        let region = errors.check("s3.region", Region::parse(&self.s3.region));
        let endpoint_url = match self.s3.endpoint_url.as_deref() {
            None | Some("") => Some(None),
            Some(u) => errors
                .check("s3.endpointUrl", EndpointUrl::parse(u))
                .map(Some),
        };
        let path_prefix = errors.check(
            "s3.pathPrefix",
            PathPrefix::parse(self.s3.path_prefix.as_deref().unwrap_or("")),
        );
        let credentials = validate_credentials(&mut self.s3, external_id, &mut errors);
        let write = validate_write_options(&mut self.s3, &mut errors);
        let format = self.format.into();
        let compression = self.compression.into();
        let csv = validate_csv(format, self.csv, &mut errors);
        let parquet = validate_parquet(format, compression, self.parquet, &mut errors);
        let batch = validate_batch(format, compression, self.batch, &mut errors);
        match (bucket, region, endpoint_url, path_prefix, credentials) {
            (
                Some(bucket),
                Some(region),
                Some(endpoint_url),
                Some(path_prefix),
                Some(credentials),
            ) if errors.is_empty() => Ok(DestinationSpec {
                name,
                s3: S3Settings {
                    bucket,
                    region,
                    endpoint_url,
                    path_prefix,
                    credentials,
                    write,
                },
                format,
                compression,
                csv,
                parquet,
                status: self.status.into(),
                batch,
            }),
            _ => Err(errors),
        }
    }
}

/// A destination as the API shows it: no secret, the access key id masked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    /// The destination's id.
    #[schema(value_type = String, example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    id: DestinationId,
    #[serde(rename = "type")]
    kind: DestinationType,
    /// A name for humans.
    name: String,
    s3: S3View,
    format: Format,
    compression: Compression,
    /// With format `CSV` only: spreadsheet safety.
    #[serde(skip_serializing_if = "Option::is_none")]
    csv: Option<CsvView>,
    /// With format `PARQUET` only: the codec inside the file and declared column types.
    #[serde(skip_serializing_if = "Option::is_none")]
    parquet: Option<ParquetView>,
    status: DestinationStatus,
    /// Present for a batched destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<BatchView>,
    /// Whether deliveries to it succeed; `FAILING` holds its deliveries.
    health: HealthView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A batched destination's settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchView {
    window_seconds: u32,
    max_object_bytes: u64,
}

/// A CSV destination's settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsvView {
    /// Whether text cells starting with `=`, `+`, `-`, `@`, a tab or a carriage return get
    /// a `'` in front (see the request's `csv.neutralizeFormulas`).
    neutralize_formulas: bool,
}

impl From<CsvOptions> for CsvView {
    fn from(c: CsvOptions) -> Self {
        Self {
            neutralize_formulas: c.neutralize_formulas,
        }
    }
}

/// A Parquet destination's settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParquetView {
    compression: ParquetCompression,
    /// Declared column types; absent when every column is inferred.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    column_types: BTreeMap<String, ColumnType>,
}

impl From<&ParquetOptions> for ParquetView {
    fn from(p: &ParquetOptions) -> Self {
        Self {
            compression: p.compression.into(),
            column_types: column_types_from_core(&p.column_types),
        }
    }
}

/// Recent delivery health of a destination.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// `HEALTHY`, or `FAILING` after several permanent failures of its store in a row
    /// (failures of a delivery's rows never count): its deliveries are held (not failed)
    /// until the destination is updated or its connection test passes.
    #[schema(example = "HEALTHY")]
    state: &'static str,
    /// Permanent failures of its store in a row since the last successful delivery.
    consecutive_failures: u32,
    /// Since when it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<DateTime<Utc>>,
    /// The store's error code of the last failure, e.g. `AccessDenied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error_message: Option<String>,
}

impl From<DestinationHealth> for HealthView {
    fn from(h: DestinationHealth) -> Self {
        Self {
            state: if h.is_failing() { "FAILING" } else { "HEALTHY" },
            consecutive_failures: h.consecutive_failures,
            failing_since: h.failing_since,
            last_error_code: h.last_error_code,
            last_error_message: h.last_error_message,
        }
    }
}

/// Where the files go. The secret access key is never shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3View {
    #[schema(example = "acme-mapping-results")]
    bucket: String,
    #[schema(example = "eu-west-1")]
    region: String,
    /// The endpoint of an S3-compatible store; absent for AWS S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    /// The key prefix of every delivered file: empty, or a folder path ending with `/`.
    #[schema(example = "incoming/")]
    path_prefix: String,
    /// `STATIC` (an access key pair), `NONE` (unsigned), `DEFAULT_CHAIN` (the workers' AWS
    /// chain) or `ROLE` (a role of yours that Courier assumes).
    credentials: CredentialsMode,
    /// The access key id, masked (`AKIA…MPLE`); present only with `STATIC` credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AKIA…MPLE")]
    access_key_id: Option<String>,
    /// With `ROLE`: the role Courier assumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "arn:aws:iam::123456789012:role/courier-delivery")]
    role_arn: Option<String>,
    /// Your tenant's ExternalId, issued by Courier (the same on every destination): a role's
    /// trust policy must require it (`sts:ExternalId`).
    #[schema(example = "Qm9bT4x7Kp2Lw8Zr5Nc1Vd6Hs3Jf0Yga")]
    external_id: String,
    /// `AES256`, `aws:kms` or `aws:kms:dsse`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_side_encryption: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_class: Option<&'static str>,
    /// Object tags; absent when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canned_acl: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_bucket_owner: Option<String>,
}

impl DestinationView {
    /// `d` as shown, with its current `health` and its tenant's `external_id`.
    pub fn new(d: &Destination, health: DestinationHealth, external_id: &ExternalId) -> Self {
        let s3 = &d.spec.s3;
        let role = s3.credentials.as_role();
        let w = &s3.write;
        Self {
            id: d.id.clone(),
            kind: DestinationType::S3,
            name: d.spec.name.clone(),
            s3: S3View {
                bucket: s3.bucket.to_string(),
                region: s3.region.to_string(),
                endpoint_url: s3.endpoint_url.as_ref().map(ToString::to_string),
                path_prefix: s3.path_prefix.to_string(),
                credentials: s3.credentials.mode().into(),
                access_key_id: s3
                    .credentials
                    .as_static()
                    .map(|c| mask_access_key_id(&c.access_key_id)),
                role_arn: role.map(|r| r.role_arn.to_string()),
                external_id: role.map_or(external_id, |r| &r.external_id).to_string(),
                server_side_encryption: w.server_side_encryption.map(|e| e.as_str()),
                kms_key_id: w.kms_key_id.as_ref().map(ToString::to_string),
                storage_class: w.storage_class.map(|c| c.as_str()),
                tags: w.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                canned_acl: w.canned_acl.map(|a| a.as_str()),
                expected_bucket_owner: w.expected_bucket_owner.as_ref().map(ToString::to_string),
            },
            format: d.spec.format.into(),
            compression: d.spec.compression.into(),
            csv: (d.spec.format == CoreFormat::Csv).then(|| d.spec.csv.into()),
            parquet: (d.spec.format == CoreFormat::Parquet).then(|| (&d.spec.parquet).into()),
            status: d.spec.status.into(),
            batch: d.spec.batch.map(|b| BatchView {
                window_seconds: b.window_seconds,
                max_object_bytes: b.max_object_bytes,
            }),
            health: health.into(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// A page of destinations.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPage {
    pub items: Vec<DestinationView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(value_type = Option<String>, required = true)]
    pub next_cursor: Option<DestinationId>,
}

#[cfg(test)]
mod tests {
    use courier_core::destination::DestinationStatus as CoreDestinationStatus;
    use courier_core::{Compression as CoreCompression, Format as CoreFormat};

    use super::*;

    fn eid() -> ExternalId {
        ExternalId::parse("Qm9bT4x7Kp2Lw8Zr5Nc1Vd6Hs3Jf0Yga").unwrap()
    }

    fn request(json: serde_json::Value) -> DestinationRequest {
        serde_json::from_value(json).unwrap()
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "type": "S3",
            "name": "Production S3 bucket",
            "s3": {
                "bucket": "acme-mapping-results",
                "region": "eu-west-1",
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "pathPrefix": "incoming/"
            },
            "status": "ACTIVE"
        })
    }

    #[test]
    fn the_documented_example_is_valid() {
        let spec = request(valid()).validate(&eid()).unwrap();
        assert_eq!(spec.s3.bucket.as_str(), "acme-mapping-results");
        assert_eq!(spec.s3.path_prefix.as_str(), "incoming/");
        assert_eq!(spec.format, CoreFormat::Csv, "CSV is the default format");
        assert_eq!(spec.compression, CoreCompression::None);
        assert_eq!(spec.status, CoreDestinationStatus::Active);
    }

    #[test]
    fn a_batched_destination_is_gzip_ndjson_within_the_limits() {
        let mut body = valid();
        body["batch"] = serde_json::json!({});
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["format", "compression"], "CSV is refused");

        body["format"] = "NDJSON".into();
        body["compression"] = "GZIP".into();
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert_eq!(
            spec.batch,
            Some(courier_core::batch::BatchSettings {
                window_seconds: 60,
                max_object_bytes: 100 * 1024 * 1024
            }),
            "the defaults"
        );

        body["batch"] = serde_json::json!({"windowSeconds": 4, "maxObjectBytes": 1024});
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["batch.windowSeconds", "batch.maxObjectBytes"]);

        body["batch"] = serde_json::json!({"windowSeconds": 5, "unknown": 1});
        assert!(serde_json::from_value::<DestinationRequest>(body).is_err());
    }

    #[test]
    fn all_errors_are_reported_with_their_field() {
        let mut body = valid();
        body["name"] = "".into();
        body["s3"]["bucket"] = "Bad_Bucket".into();
        body["s3"]["pathPrefix"] = "incoming".into();
        body["s3"]["endpointUrl"] = "ftp://x".into();
        body["s3"]["region"] = "EU WEST".into();
        let errs = request(body).validate(&eid()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "s3.bucket",
                "s3.region",
                "s3.endpointUrl",
                "s3.pathPrefix"
            ]
        );
    }

    #[test]
    fn credentials_come_in_pairs_or_not_at_all() {
        let mut body = valid();
        body["s3"]
            .as_object_mut()
            .unwrap()
            .remove("secretAccessKey");
        let errs = request(body).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.secretAccessKey");

        let mut body = valid();
        let s3 = body["s3"].as_object_mut().unwrap();
        s3.remove("secretAccessKey");
        s3.remove("accessKeyId");
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert_eq!(
            spec.s3.credentials,
            Credentials::Anonymous,
            "no keys: unsigned"
        );

        body["s3"]["credentials"] = "DEFAULT_CHAIN".into();
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert_eq!(spec.s3.credentials, Credentials::DefaultChain);

        body["s3"]["credentials"] = "STATIC".into();
        let errs = request(body).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.accessKeyId");

        let mut body = valid();
        body["s3"]["credentials"] = "NONE".into();
        let errs = request(body).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.accessKeyId");
        assert!(errs.0[0].message.contains("only used with STATIC"));
    }

    #[test]
    fn role_credentials_need_a_role_arn_and_carry_the_tenants_external_id() {
        let mut body = valid();
        let s3 = body["s3"].as_object_mut().unwrap();
        s3.remove("accessKeyId");
        s3.remove("secretAccessKey");
        s3.insert(
            "roleArn".into(),
            "arn:aws:iam::123456789012:role/courier".into(),
        );
        let spec = request(body.clone()).validate(&eid()).unwrap();
        let role = spec
            .s3
            .credentials
            .as_role()
            .expect("ROLE by default with a roleArn");
        assert_eq!(
            role.role_arn.as_str(),
            "arn:aws:iam::123456789012:role/courier"
        );
        assert_eq!(role.external_id, eid());

        // The tenant's own externalId sent back is accepted; any other is refused.
        body["s3"]["externalId"] = eid().as_str().into();
        assert!(request(body.clone()).validate(&eid()).is_ok());
        body["s3"]["externalId"] = "mine-chosen-by-me".into();
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.externalId");
        body["s3"].as_object_mut().unwrap().remove("externalId");

        body["s3"]["roleArn"] = "arn:aws:iam::123:role/x".into();
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.roleArn");
        assert!(
            errs.0[0].message.contains("12 digits"),
            "{}",
            errs.0[0].message
        );

        body["s3"]["credentials"] = "ROLE".into();
        body["s3"].as_object_mut().unwrap().remove("roleArn");
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.roleArn");

        let mut keys_and_role = valid();
        keys_and_role["s3"]["credentials"] = "ROLE".into();
        keys_and_role["s3"]["roleArn"] = "arn:aws:iam::123456789012:role/courier".into();
        let errs = request(keys_and_role).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.accessKeyId");

        let mut static_with_role = valid();
        static_with_role["s3"]["roleArn"] = "arn:aws:iam::123456789012:role/courier".into();
        let errs = request(static_with_role).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.roleArn");
    }

    #[test]
    fn write_options_are_checked_each_under_its_field() {
        use courier_core::write_options::{CannedAcl, ServerSideEncryption, StorageClass};
        let mut body = valid();
        body["s3"]["serverSideEncryption"] = "aws:kms".into();
        body["s3"]["kmsKeyId"] = "alias/courier".into();
        body["s3"]["storageClass"] = "STANDARD_IA".into();
        body["s3"]["tags"] = serde_json::json!({"team": "data", "source": "courier"});
        body["s3"]["cannedAcl"] = "bucket-owner-full-control".into();
        body["s3"]["expectedBucketOwner"] = "123456789012".into();
        let w = request(body.clone()).validate(&eid()).unwrap().s3.write;
        assert_eq!(w.server_side_encryption, Some(ServerSideEncryption::AwsKms));
        assert_eq!(w.kms_key_id.unwrap().as_str(), "alias/courier");
        assert_eq!(w.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(w.tags.header().unwrap(), "source=courier&team=data");
        assert_eq!(w.canned_acl, Some(CannedAcl::BucketOwnerFullControl));
        assert_eq!(w.expected_bucket_owner.unwrap().as_str(), "123456789012");

        let mut bad = body.clone();
        bad["s3"]["serverSideEncryption"] = "AES128".into();
        bad["s3"]["storageClass"] = "COLD".into();
        bad["s3"]["tags"] = serde_json::json!({"aws:x": "y"});
        bad["s3"]["cannedAcl"] = "public-read".into();
        bad["s3"]["expectedBucketOwner"] = "12345".into();
        bad["s3"]["kmsKeyId"] = "not a key".into();
        let errs = request(bad).validate(&eid()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s3.serverSideEncryption",
                "s3.kmsKeyId",
                "s3.storageClass",
                "s3.tags",
                "s3.cannedAcl",
                "s3.expectedBucketOwner"
            ]
        );

        // A KMS key only with KMS encryption.
        body["s3"]["serverSideEncryption"] = "AES256".into();
        let errs = request(body).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "s3.kmsKeyId");
        assert!(errs.0[0].message.contains("aws:kms"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut body = valid();
        body["s3"]["acl"] = "public-read".into();
        let err = serde_json::from_value::<DestinationRequest>(body).unwrap_err();
        assert!(err.to_string().contains("unknown field `acl`"), "{err}");
    }

    #[test]
    fn parquet_settings_go_with_format_parquet_only() {
        use courier_core::format::{ColumnType as CoreColumnType, ParquetCompression as Codec};

        let mut body = valid();
        body["format"] = "PARQUET".into();
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert_eq!(spec.format, CoreFormat::Parquet);
        assert_eq!(spec.parquet, ParquetOptions::default());
        assert_eq!(spec.parquet.compression, Codec::Zstd);

        body["parquet"] = serde_json::json!({
            "compression": "SNAPPY", "columnTypes": {"at": "TIMESTAMP", "n": "INT64"}
        });
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert_eq!(spec.parquet.compression, Codec::Snappy);
        assert_eq!(
            spec.parquet.column_types,
            [
                ("at".to_owned(), CoreColumnType::Timestamp),
                ("n".to_owned(), CoreColumnType::Int64)
            ]
            .into()
        );

        // gzip around the file would make it unreadable: refused, pointing to the codec.
        body["compression"] = "GZIP".into();
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "compression");
        assert!(
            errs.0[0]
                .message
                .contains(r#""parquet": {"compression": "ZSTD"}"#)
        );

        // Parquet settings on another format mean nothing: refused.
        body["compression"] = "NONE".into();
        body["format"] = "CSV".into();
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "parquet");

        body["format"] = "PARQUET".into();
        body["parquet"] = serde_json::json!({"columnTypes": {"": "INT64"}});
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0[0].field, "parquet.columnTypes");
        body["parquet"] = serde_json::json!({"columnTypes": {"a": "DECIMAL"}});
        assert!(serde_json::from_value::<DestinationRequest>(body.clone()).is_err());
        body["parquet"] = serde_json::json!({"codec": "ZSTD"});
        assert!(serde_json::from_value::<DestinationRequest>(body).is_err());
    }

    #[test]
    fn csv_settings_go_with_format_csv_only() {
        let spec = request(valid()).validate(&eid()).unwrap();
        assert_eq!(spec.csv, CsvOptions::default(), "off unless asked for");
        assert!(!spec.csv.neutralize_formulas);

        let mut body = valid();
        body["csv"] = serde_json::json!({"neutralizeFormulas": true});
        let spec = request(body.clone()).validate(&eid()).unwrap();
        assert!(spec.csv.neutralize_formulas);
        body["csv"] = serde_json::json!({});
        assert!(
            !request(body.clone())
                .validate(&eid())
                .unwrap()
                .csv
                .neutralize_formulas
        );

        // On another format it would mean nothing: refused, naming the field.
        body["csv"] = serde_json::json!({"neutralizeFormulas": true});
        body["format"] = "XLSX".into();
        let errs = request(body.clone()).validate(&eid()).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "csv");
        assert!(
            errs.0[0]
                .message
                .contains("only for destinations with format CSV")
        );

        body["format"] = "CSV".into();
        body["csv"] = serde_json::json!({"neutraliseFormulas": true});
        let err = serde_json::from_value::<DestinationRequest>(body.clone()).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown field `neutraliseFormulas`"),
            "{err}"
        );
        body["csv"] = serde_json::json!({"neutralizeFormulas": "yes"});
        assert!(serde_json::from_value::<DestinationRequest>(body).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("wJalrXUtnFEMI");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let spec = request(valid()).validate(&eid()).unwrap();
        assert!(!format!("{spec:?}").contains("wJalrXUtnFEMI"));
        assert_eq!(mask_access_key_id("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask_access_key_id("short"), "****");
    }
}
