//! The connection test: does a destination accept Courier's deliveries?
//!
//! [`test_connection`] runs three steps against the customer's store, each one request,
//! preceded by two STS steps for a `ROLE` destination:
//!
//! 0. **AssumeRole** with the tenant's ExternalId, by the fleet's own identity: may Courier
//!    use the role? Its credentials sign the three steps below.
//! 0. **AssumeRoleWithoutExternalId**: the same request without the ExternalId, which must
//!    be *refused*. If the role can be assumed without it, its trust policy does not
//!    require `sts:ExternalId`, and any AWS customer of the fleet could make Courier write
//!    with it (the "confused deputy"): the test fails (`RoleAssumableWithoutExternalId`).
//! 1. **HeadBucket**: does the bucket exist, in this region, on this endpoint?
//! 2. **PutObject** of a small text object under the path prefix: can Courier write?
//! 3. **DeleteObject** of that object: the test leaves nothing behind.
//!
//! Decisions:
//!
//! - HeadBucket answered 403 (`AccessDenied`) is a [`StepOutcome::Warning`], not a failure:
//!   on AWS, HeadBucket needs `s3:ListBucket`, which the minimal prefix-scoped delivery
//!   policy does not grant. The writes decide.
//! - After any other HeadBucket failure the writes still run when the store *answered*
//!   (wrong region, bad credentials, …): HEAD responses have no body, so only the PutObject
//!   step can show the store's precise code (a wrong secret is a bare 403 on HEAD but
//!   `SignatureDoesNotMatch` on PUT). They are [`StepOutcome::Skipped`] when the bucket does
//!   not exist or the store did not answer at all, since they cannot pass then.
//! - A failed PutObject skips DeleteObject. A failed DeleteObject fails the test (the
//!   delivery policy grants `s3:DeleteObject` for this probe), and the report names the
//!   probe object that may be left behind.
//! - `ok` means HeadBucket passed or warned, and PutObject and DeleteObject passed (and, for a
//!   role, both AssumeRole steps passed). A failed AssumeRole skips everything after it.
//! - The probe's PutObject carries the destination's write options (encryption, class,
//!   tags, ACL) and every request its expected bucket owner, so a bucket policy that
//!   requires or denies them shows up here.
//! - Every request is bounded by `timeout`, and the whole test by that times the number of
//!   steps plus a small margin; a step cut off by that bound fails with `Timeout`.
//!
//! The report never contains the secret access key: hints name the masked key id only,
//! and the store's messages are scrubbed of the secret should a store ever echo it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use courier_core::ErrorCode;
use courier_core::destination::{
    Credentials, PathPrefix, RoleCredentials, S3Settings, mask_access_key_id,
};
use courier_egress::EgressPolicy;
use serde::Serialize;

use crate::client::{
    S3Failure, S3Timeouts, check_endpoint, client, client_with_credentials, failure, fleet_config,
};
use crate::hints::{aws_equivalent, hint, location};
use crate::stream::with_write_options;

/// What the test writes; a human who finds a left-over probe object knows what it is.
const PROBE_BODY: &str = "Courier connection test; safe to delete.\n";
/// Added to the three requests' timeouts to bound the whole test.
const MARGIN: Duration = Duration::from_secs(1);

/// One step of the connection test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProbeStepName {
    AssumeRole,
    AssumeRoleWithoutExternalId,
    HeadBucket,
    PutObject,
    DeleteObject,
}

impl ProbeStepName {
    /// Every step, in the order they run.
    pub const ALL: [ProbeStepName; 5] = [
        Self::AssumeRole,
        Self::AssumeRoleWithoutExternalId,
        Self::HeadBucket,
        Self::PutObject,
        Self::DeleteObject,
    ];

    /// The steps a destination's test runs: the STS steps only for a role.
    pub fn steps_for(s3: &S3Settings) -> &'static [ProbeStepName] {
        match s3.credentials {
            Credentials::Role(_) => &Self::ALL,
            _ => &Self::ALL[2..],
        }
    }
}

impl fmt::Display for ProbeStepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AssumeRole => "AssumeRole",
            Self::AssumeRoleWithoutExternalId => "AssumeRole without the ExternalId",
            Self::HeadBucket => "HeadBucket",
            Self::PutObject => "PutObject",
            Self::DeleteObject => "DeleteObject",
        })
    }
}

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepOutcome {
    Passed,
    Failed,
    /// Refused in a way that does not stop deliveries (HeadBucket without `s3:ListBucket`).
    Warning,
    /// Not run, because an earlier step showed it cannot pass.
    Skipped,
}

/// Why a step failed or warned, and what to do about it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeError {
    /// The store's error code, or Courier's name for a failure without an answer
    /// (`Timeout`, `ConnectionFailed`, …).
    pub code: String,
    pub message: String,
    /// Plain-words advice, see [`hint`].
    pub hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// One step of the report.
#[derive(Debug, Clone, Serialize)]
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

/// The result of a connection test.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// True when Courier can deliver: PutObject and DeleteObject passed, HeadBucket passed
    /// or warned.
    pub ok: bool,
    /// One plain sentence.
    pub summary: String,
    /// Always every step of the destination's kind, in order: the three S3 steps, after
    /// the two AssumeRole steps for a role.
    pub steps: Vec<ProbeStep>,
}

/// Runs HeadBucket, then PutObject of a small probe object under the path prefix, then
/// DeleteObject of it; for a role first the two AssumeRole steps. Each request gets
/// `timeout`; the whole test at most that times the steps plus a second. `session` is the
/// role session name ([`courier_core::role::test_session_name`]).
pub async fn test_connection(
    s3: &S3Settings,
    timeout: Duration,
    egress: &Arc<EgressPolicy>,
    session: &str,
) -> ProbeReport {
    let key = probe_key(&s3.path_prefix);
    let all = ProbeStepName::steps_for(s3);
    let budget = timeout * all.len() as u32 + MARGIN;
    let mut steps = Vec::with_capacity(all.len());
    if tokio::time::timeout(
        budget,
        run_steps(s3, timeout, egress, session, &key, &mut steps),
    )
    .await
    .is_err()
    {
        finish_after_deadline(s3, &key, budget, &mut steps);
    }
    let report = report(s3, &key, steps);
    tracing::info!(
        bucket = %s3.bucket,
        prefix = %s3.path_prefix,
        ok = report.ok,
        summary = %report.summary,
        "connection test"
    );
    report
}

/// The probe object's key: `{pathPrefix}.courier-connection-test-{ULID}.txt`. Unique per
/// run, and a dot-file, which most consumers of the prefix skip.
pub fn probe_key(prefix: &PathPrefix) -> String {
    format!("{prefix}.courier-connection-test-{}.txt", ulid::Ulid::new())
}

/// Runs the steps, pushing each result into `steps` as it completes, so that a test cut off
/// by the overall deadline still reports what it did.
async fn run_steps(
    s3: &S3Settings,
    timeout: Duration,
    egress: &Arc<EgressPolicy>,
    session: &str,
    key: &str,
    steps: &mut Vec<ProbeStep>,
) {
    let timeouts = S3Timeouts {
        connect: timeout,
        operation: timeout,
    };
    let built = match &s3.credentials {
        Credentials::Role(role) => {
            match assume_role_steps(s3, role, timeout, session, steps).await {
                Some(credentials) => check_endpoint(s3, egress)
                    .map(|()| client_with_credentials(s3, credentials, timeouts, egress)),
                None => {
                    skip_rest(s3, steps);
                    return;
                }
            }
        }
        _ => client(s3, timeouts, egress, session).await,
    };
    let client = match built {
        Ok(c) => c,
        Err(refused) => {
            let name = ProbeStepName::HeadBucket;
            steps.push(step(s3, name, None, Duration::ZERO, Err(refused)));
            skip_rest(s3, steps);
            return;
        }
    };
    let (elapsed, head) = timed(head_bucket(&client, s3)).await;
    let writes_can_tell = head.as_ref().err().is_none_or(writes_can_tell_more);
    steps.push(step(s3, ProbeStepName::HeadBucket, None, elapsed, head));
    if !writes_can_tell {
        skip_rest(s3, steps);
        return;
    }
    let (elapsed, put) = timed(put_probe(&client, s3, key)).await;
    let put_ok = put.is_ok();
    steps.push(step(s3, ProbeStepName::PutObject, Some(key), elapsed, put));
    if !put_ok {
        skip_rest(s3, steps);
        return;
    }
    let (elapsed, delete) = timed(delete_probe(&client, s3, key)).await;
    steps.push(step(
        s3,
        ProbeStepName::DeleteObject,
        Some(key),
        elapsed,
        delete,
    ));
}

/// The two STS steps of a role: AssumeRole with the ExternalId (whose credentials are
/// returned for the S3 steps), then without it, which must be refused. `None` when a step
/// failed and the test stops.
async fn assume_role_steps(
    s3: &S3Settings,
    role: &RoleCredentials,
    timeout: Duration,
    session: &str,
    steps: &mut Vec<ProbeStep>,
) -> Option<aws_credential_types::Credentials> {
    let conf = fleet_config().await;
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&conf)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_sts::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build(),
    );
    let assume = |external_id: Option<&str>| {
        sts.assume_role()
            .role_arn(role.role_arn.as_str())
            .role_session_name(session)
            .set_external_id(external_id.map(str::to_owned))
            .duration_seconds(900)
            .send()
    };
    let (elapsed, with) = timed(assume(Some(role.external_id.as_str()))).await;
    let credentials = match with {
        Ok(out) => out.credentials.map(|c| {
            aws_credential_types::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                Some(c.session_token),
                None,
                "courier-connection-test",
            )
        }),
        Err(e) => {
            let f = failure(e);
            steps.push(step(s3, ProbeStepName::AssumeRole, None, elapsed, Err(f)));
            return None;
        }
    };
    let Some(credentials) = credentials else {
        let f = S3Failure::new(ErrorCode::InvalidResponse, "STS returned no credentials");
        steps.push(step(s3, ProbeStepName::AssumeRole, None, elapsed, Err(f)));
        return None;
    };
    steps.push(step(s3, ProbeStepName::AssumeRole, None, elapsed, Ok(())));
    let (elapsed, without) = timed(assume(None)).await;
    let result = match without {
        Ok(_) => Err(S3Failure::new(
            ErrorCode::RoleAssumableWithoutExternalId,
            format!(
                "the role {} could be assumed without the ExternalId",
                role.role_arn
            ),
        )),
        Err(e) => {
            let f = failure(e);
            if f.status.is_some_and(|s| (400..500).contains(&s)) {
                // Refused, as it must be.
                Ok(())
            } else {
                Err(f)
            }
        }
    };
    let ok = result.is_ok();
    let name = ProbeStepName::AssumeRoleWithoutExternalId;
    steps.push(step(s3, name, None, elapsed, result));
    ok.then_some(credentials)
}

async fn head_bucket(client: &aws_sdk_s3::Client, s3: &S3Settings) -> Result<(), S3Failure> {
    client
        .head_bucket()
        .bucket(s3.bucket.as_str())
        .send()
        .await
        .map(drop)
        .map_err(failure)
}

async fn put_probe(
    client: &aws_sdk_s3::Client,
    s3: &S3Settings,
    key: &str,
) -> Result<(), S3Failure> {
    with_write_options!(client.put_object(), &s3.write)
        .bucket(s3.bucket.as_str())
        .key(key)
        .content_type("text/plain; charset=utf-8")
        .content_length(PROBE_BODY.len() as i64)
        .body(ByteStream::from_static(PROBE_BODY.as_bytes()))
        .send()
        .await
        .map(drop)
        .map_err(failure)
}

async fn delete_probe(
    client: &aws_sdk_s3::Client,
    s3: &S3Settings,
    key: &str,
) -> Result<(), S3Failure> {
    client
        .delete_object()
        .bucket(s3.bucket.as_str())
        .key(key)
        .send()
        .await
        .map(drop)
        .map_err(failure)
}

async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let out = f.await;
    (started.elapsed(), out)
}

/// Whether PutObject and DeleteObject can tell more after HeadBucket failed: yes when the
/// store answered, unless it said the bucket does not exist.
fn writes_can_tell_more(head: &S3Failure) -> bool {
    head.status.is_some() && !is_missing_bucket(&head.code)
}

fn is_missing_bucket(code: &ErrorCode) -> bool {
    matches!(code, ErrorCode::NoSuchBucket | ErrorCode::NotFound)
}

/// How a step that got `result` went.
fn outcome(name: ProbeStepName, result: &Result<(), S3Failure>) -> StepOutcome {
    match result {
        Ok(()) => StepOutcome::Passed,
        Err(f) if name == ProbeStepName::HeadBucket && f.code == ErrorCode::AccessDenied => {
            StepOutcome::Warning
        }
        Err(_) => StepOutcome::Failed,
    }
}

fn step(
    s3: &S3Settings,
    name: ProbeStepName,
    key: Option<&str>,
    elapsed: Duration,
    result: Result<(), S3Failure>,
) -> ProbeStep {
    ProbeStep {
        step: name,
        outcome: outcome(name, &result),
        duration_ms: millis(elapsed),
        key: key.map(str::to_owned),
        error: result.err().map(|f| probe_error(s3, name, key, f)),
    }
}

fn probe_error(
    s3: &S3Settings,
    name: ProbeStepName,
    key: Option<&str>,
    f: S3Failure,
) -> ProbeError {
    let mut advice = hint(name, &aws_equivalent(&f.code, &f.message), s3);
    if let (ProbeStepName::DeleteObject, Some(key)) = (name, key) {
        advice.push_str(&format!(
            " The probe object s3://{}/{key} may be left behind; it is safe to delete by hand.",
            s3.bucket
        ));
    }
    ProbeError {
        message: scrub(f.message, s3),
        code: f.code.into(),
        hint: advice,
        http_status: f.status,
    }
}

/// Removes the secret from a store's message, should a store ever echo it, and masks the
/// access key id (Garage names it in `No such key: GK…`) as everywhere else in the API.
fn scrub(text: String, s3: &S3Settings) -> String {
    let Credentials::Static(c) = &s3.credentials else {
        return text;
    };
    let mut text = text;
    let secret = c.secret_access_key.expose();
    if !secret.is_empty() {
        text = text.replace(secret, "***");
    }
    if !c.access_key_id.is_empty() {
        text = text.replace(&c.access_key_id, &mask_access_key_id(&c.access_key_id));
    }
    text
}

/// Marks every step not yet run as skipped.
fn skip_rest(s3: &S3Settings, steps: &mut Vec<ProbeStep>) {
    for &name in &ProbeStepName::steps_for(s3)[steps.len()..] {
        steps.push(ProbeStep {
            step: name,
            outcome: StepOutcome::Skipped,
            duration_ms: 0,
            key: None,
            error: None,
        });
    }
}

/// The overall deadline cut the test off: the step that was running failed with `Timeout`.
fn finish_after_deadline(s3: &S3Settings, key: &str, budget: Duration, steps: &mut Vec<ProbeStep>) {
    let Some(&name) = ProbeStepName::steps_for(s3).get(steps.len()) else {
        return;
    };
    let cut_off = S3Failure::new(
        ErrorCode::Timeout,
        format!(
            "the connection test did not finish within {} ms",
            millis(budget)
        ),
    );
    let key = matches!(name, ProbeStepName::PutObject | ProbeStepName::DeleteObject).then_some(key);
    let elapsed = budget.saturating_sub(
        steps
            .iter()
            .map(|s| Duration::from_millis(s.duration_ms))
            .sum(),
    );
    steps.push(step(s3, name, key, elapsed, Err(cut_off)));
    skip_rest(s3, steps);
}

fn report(s3: &S3Settings, key: &str, steps: Vec<ProbeStep>) -> ProbeReport {
    let ok = is_ok(&steps);
    ProbeReport {
        ok,
        summary: summary(s3, key, ok, &steps),
        steps,
    }
}

fn is_ok(steps: &[ProbeStep]) -> bool {
    let outcome_of = |name| steps.iter().find(|s| s.step == name).map(|s| s.outcome);
    let sts_passed = |name| outcome_of(name).is_none_or(|o| o == StepOutcome::Passed);
    sts_passed(ProbeStepName::AssumeRole)
        && sts_passed(ProbeStepName::AssumeRoleWithoutExternalId)
        && matches!(
            outcome_of(ProbeStepName::HeadBucket),
            Some(StepOutcome::Passed | StepOutcome::Warning)
        )
        && outcome_of(ProbeStepName::PutObject) == Some(StepOutcome::Passed)
        && outcome_of(ProbeStepName::DeleteObject) == Some(StepOutcome::Passed)
}

fn summary(s3: &S3Settings, key: &str, ok: bool, steps: &[ProbeStep]) -> String {
    let place = location(s3);
    if ok {
        let head_warned = steps.iter().any(|s| s.outcome == StepOutcome::Warning);
        return if head_warned {
            format!(
                "Connection works: Courier can write to {place} (HeadBucket was not permitted, \
                 which is fine)."
            )
        } else {
            format!("Connection works: Courier can write to {place}.")
        };
    }
    let failed = steps.iter().find(|s| s.outcome == StepOutcome::Failed);
    match failed.map(|s| (s.step, s.error.as_ref())) {
        Some((ProbeStepName::DeleteObject, Some(e))) => format!(
            "Connection failed at DeleteObject: {}; the probe object s3://{}/{key} may be left \
             behind.",
            e.code, s3.bucket
        ),
        Some((name, Some(e))) => format!("Connection failed at {name}: {}.", e.code),
        _ => format!("Connection test of {place} did not complete."),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use courier_core::destination::{BucketName, Region, Secret, StaticCredentials};

    use super::*;
    use ProbeStepName::{DeleteObject, HeadBucket, PutObject};

    fn settings() -> S3Settings {
        S3Settings {
            bucket: BucketName::parse("acme-results").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            endpoint_url: None,
            path_prefix: PathPrefix::parse("incoming/").unwrap(),
            credentials: Credentials::Static(StaticCredentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            }),
            write: Default::default(),
        }
    }

    fn failure(code: &str, status: Option<u16>) -> S3Failure {
        S3Failure {
            code: code.into(),
            message: "m".into(),
            status,
        }
    }

    fn steps(results: Vec<(ProbeStepName, Result<(), S3Failure>)>) -> Vec<ProbeStep> {
        let mut steps: Vec<ProbeStep> = results
            .into_iter()
            .map(|(name, r)| step(&settings(), name, Some("k"), Duration::ZERO, r))
            .collect();
        skip_rest(&settings(), &mut steps);
        steps
    }

    #[test]
    fn probe_keys_are_unique_dot_files_under_the_prefix() {
        let prefix = PathPrefix::parse("incoming/").unwrap();
        let a = probe_key(&prefix);
        assert!(a.starts_with("incoming/.courier-connection-test-"), "{a}");
        assert!(a.ends_with(".txt"), "{a}");
        assert_ne!(a, probe_key(&prefix));
        assert!(probe_key(&PathPrefix::default()).starts_with(".courier-connection-test-"));
    }

    #[test]
    fn only_a_missing_bucket_or_no_answer_stops_after_head_bucket() {
        assert!(!writes_can_tell_more(&failure("NotFound", Some(404))));
        assert!(!writes_can_tell_more(&failure("NoSuchBucket", Some(404))));
        assert!(!writes_can_tell_more(&failure("ConnectionFailed", None)));
        assert!(!writes_can_tell_more(&failure("Timeout", None)));
        assert!(writes_can_tell_more(&failure("AccessDenied", Some(403))));
        assert!(writes_can_tell_more(&failure("BadRequest", Some(400))));
        assert!(writes_can_tell_more(&failure(
            "PermanentRedirect",
            Some(301)
        )));
    }

    #[test]
    fn head_bucket_access_denied_is_a_warning_and_still_ok() {
        let s = steps(vec![
            (HeadBucket, Err(failure("AccessDenied", Some(403)))),
            (PutObject, Ok(())),
            (DeleteObject, Ok(())),
        ]);
        assert_eq!(s[0].outcome, StepOutcome::Warning);
        let r = report(&settings(), "k", s);
        assert!(r.ok);
        assert_eq!(
            r.summary,
            "Connection works: Courier can write to s3://acme-results/incoming/ (HeadBucket was \
             not permitted, which is fine)."
        );
    }

    #[test]
    fn a_failed_delete_fails_the_test_and_names_the_left_over_object() {
        let s = steps(vec![
            (HeadBucket, Ok(())),
            (PutObject, Ok(())),
            (DeleteObject, Err(failure("AccessDenied", Some(403)))),
        ]);
        let r = report(&settings(), "incoming/.probe.txt", s);
        assert!(!r.ok);
        assert!(
            r.summary
                .starts_with("Connection failed at DeleteObject: AccessDenied;")
        );
        assert!(r.summary.contains("s3://acme-results/incoming/.probe.txt"));
        let hint = &r.steps[2].error.as_ref().unwrap().hint;
        assert!(hint.contains("may be left behind"), "{hint}");
    }

    #[test]
    fn a_failed_head_bucket_is_not_ok_even_if_writes_pass() {
        let s = steps(vec![
            (HeadBucket, Err(failure("BadRequest", Some(400)))),
            (PutObject, Ok(())),
            (DeleteObject, Ok(())),
        ]);
        let r = report(&settings(), "k", s);
        assert!(!r.ok);
        assert_eq!(r.summary, "Connection failed at HeadBucket: BadRequest.");
    }

    #[test]
    fn the_deadline_fails_the_running_step_and_skips_the_rest() {
        let mut s = steps(vec![(HeadBucket, Ok(()))]);
        s.truncate(1);
        finish_after_deadline(&settings(), "k", Duration::from_secs(4), &mut s);
        let outcomes: Vec<_> = s.iter().map(|s| s.outcome).collect();
        assert_eq!(
            outcomes,
            [
                StepOutcome::Passed,
                StepOutcome::Failed,
                StepOutcome::Skipped
            ]
        );
        assert_eq!(s[1].error.as_ref().unwrap().code, "Timeout");
        assert_eq!(s[1].key.as_deref(), Some("k"));
    }

    #[test]
    fn messages_are_scrubbed_of_the_secret_and_the_full_key_id() {
        let s3 = settings();
        let f = S3Failure {
            message: "echo AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            ..failure("Weird", Some(400))
        };
        let e = probe_error(&s3, PutObject, Some("k"), f);
        assert_eq!(e.message, "echo AKIA…MPLE ***");
    }

    #[test]
    fn serializes_in_the_api_shape() {
        let s = steps(vec![(HeadBucket, Err(failure("NotFound", Some(404))))]);
        let json = serde_json::to_value(report(&settings(), "k", s)).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["steps"][0]["step"], "HEAD_BUCKET");
        assert_eq!(json["steps"][0]["outcome"], "FAILED");
        assert_eq!(json["steps"][0]["error"]["httpStatus"], 404);
        assert_eq!(json["steps"][0]["durationMs"], 0);
        assert_eq!(json["steps"][1]["outcome"], "SKIPPED");
        assert!(json["steps"][1].get("error").is_none());
        assert!(json["steps"][1].get("key").is_none());
    }
}
