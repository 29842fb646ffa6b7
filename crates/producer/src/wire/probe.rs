//! The connection test's report as the API shows it, converted from
//! [`courier_s3::probe::ProbeReport`] (whose crate knows nothing of OpenAPI).

use courier_s3::probe;
use serde::Serialize;
use utoipa::ToSchema;

/// The result of a connection test: HeadBucket, PutObject of a small probe object under the
/// path prefix, DeleteObject of it; for a `ROLE` destination first AssumeRole with the
/// ExternalId and AssumeRole without it (which must be refused).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// True when Courier can deliver: PutObject and DeleteObject passed, HeadBucket passed
    /// or warned.
    pub ok: bool,
    /// One plain sentence.
    pub summary: String,
    /// Every step of the destination's kind, in order (three, or five for a role).
    pub steps: Vec<ProbeStep>,
}

/// One step of the report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStep {
    pub step: ProbeStepName,
    pub outcome: StepOutcome,
    pub duration_ms: u64,
    /// The probe object's key, for the steps that used it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
}

/// One step of the connection test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProbeStepName {
    /// STS AssumeRole with the tenant's ExternalId (`ROLE` only).
    AssumeRole,
    /// STS AssumeRole without the ExternalId, which must be refused (`ROLE` only).
    AssumeRoleWithoutExternalId,
    HeadBucket,
    PutObject,
    DeleteObject,
}

/// How one step went: `PASSED`, `FAILED`, `WARNING` (refused in a way that does not stop
/// deliveries: HeadBucket without `s3:ListBucket`) or `SKIPPED` (not run, because an earlier
/// step showed it cannot pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepOutcome {
    Passed,
    Failed,
    Warning,
    Skipped,
}

/// Why a step failed or warned, and what to do about it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeError {
    /// The store's error code, or Courier's name for a failure without an answer
    /// (`Timeout`, `ConnectionFailed`, …).
    pub code: String,
    pub message: String,
    /// Plain-words advice.
    pub hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl From<probe::ProbeReport> for ProbeReport {
    fn from(r: probe::ProbeReport) -> Self {
        Self {
            ok: r.ok,
            summary: r.summary,
            steps: r.steps.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<probe::ProbeStep> for ProbeStep {
    fn from(s: probe::ProbeStep) -> Self {
        Self {
            step: s.step.into(),
            outcome: s.outcome.into(),
            duration_ms: s.duration_ms,
            key: s.key,
            error: s.error.map(Into::into),
        }
    }
}

impl From<probe::ProbeStepName> for ProbeStepName {
    fn from(n: probe::ProbeStepName) -> Self {
        match n {
            probe::ProbeStepName::AssumeRole => Self::AssumeRole,
            probe::ProbeStepName::AssumeRoleWithoutExternalId => Self::AssumeRoleWithoutExternalId,
            probe::ProbeStepName::HeadBucket => Self::HeadBucket,
            probe::ProbeStepName::PutObject => Self::PutObject,
            probe::ProbeStepName::DeleteObject => Self::DeleteObject,
        }
    }
}

impl From<probe::StepOutcome> for StepOutcome {
    fn from(o: probe::StepOutcome) -> Self {
        match o {
            probe::StepOutcome::Passed => Self::Passed,
            probe::StepOutcome::Failed => Self::Failed,
            probe::StepOutcome::Warning => Self::Warning,
            probe::StepOutcome::Skipped => Self::Skipped,
        }
    }
}

impl From<probe::ProbeError> for ProbeError {
    fn from(e: probe::ProbeError) -> Self {
        Self {
            code: e.code,
            message: e.message,
            hint: e.hint,
            http_status: e.http_status,
        }
    }
}
