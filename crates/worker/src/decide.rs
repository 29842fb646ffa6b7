//! Every decision about a delivery, as one pure function.
//!
//! [`decide`] looks at what the worker knows at a [`Stage`] of the delivery (the record,
//! the task, the destination's state and health, the claims on the key and on an upload
//! slot, the key's marker, the outcome of the attempt), the retry policy and the time,
//! and returns the [`Transition`]: go on, or end here in one of the ways a delivery ends.
//! It reads no clock and no store; [`crate::deliver`] gathers the facts and carries the
//! transition out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::ErrorCode;
use courier_core::delivery::{DeliveryError, DeliveryRecord, DeliveryStatus, DeliveryTask};
use courier_core::destination::DestinationStatus;
use courier_core::failure::{ChargedTo, ErrorClass};
use courier_store::Marker;
use rand::Rng;

use crate::pipeline::PipelineError;
use crate::retry::RetryPolicy;

/// When the object key or the destination's upload slots are busy, try again this much
/// later.
pub const BUSY_DELAY: Duration = Duration::from_secs(1);

/// How much later than a delivery's last possible run its key's marker is kept (a day, or
/// the horizon itself when that is shorter): an upload that began just inside
/// [`Bounds::horizon`] still finds the marker when it ends, and workers' clocks may differ
/// by a little.
pub const MARKER_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// How long a delivery may wait, and so how long its key's marker must be remembered.
///
/// A delivery can still reach its key while it is held (up to `held_max_age` after it was
/// enqueued), retried (up to the retry policy's `max_elapsed` after its first attempt),
/// dead-lettered (replayable for the dead letters' retention) and retried once more after a
/// replay. The stale-overwrite guard only works while the key's marker is kept, so the
/// marker outlives all of that ([`Bounds::marker_ttl`]), and a delivery older than the
/// [`Bounds::horizon`] (replayed again and again, say) is refused instead of uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `COURIER_HELD_MAX_AGE_SECS`: a delivery enqueued longer ago than this is not held
    /// any more; it fails as `HeldTooLong`.
    pub held_max_age: Duration,
    /// A delivery enqueued longer ago than this is not uploaded; it fails as
    /// `DeliveryExpired`.
    pub horizon: Duration,
}

impl Bounds {
    /// The bounds for a fleet that holds deliveries up to `held_max_age`, retries for
    /// `retry_span` after a first attempt, and keeps dead letters for `dead_letter_retention`.
    pub fn new(
        held_max_age: Duration,
        retry_span: Duration,
        dead_letter_retention: Duration,
    ) -> Self {
        Bounds {
            held_max_age,
            horizon: held_max_age + retry_span + dead_letter_retention + retry_span,
        }
    }

    /// How long a key's marker is kept after each delivery to the key: a delivery of the
    /// key enqueued before the marker was set runs, if at all, within [`Bounds::horizon`]
    /// of its enqueue (else it is refused), so it still finds the marker.
    pub fn marker_ttl(&self) -> Duration {
        self.horizon + MARKER_MARGIN.min(self.horizon)
    }
}

/// What every stage knows.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub record: &'a DeliveryRecord,
    /// The task; at [`Stage::Attempted`], its retry state already counts the attempt.
    pub task: &'a DeliveryTask,
    pub policy: &'a RetryPolicy,
    pub bounds: &'a Bounds,
    pub now: DateTime<Utc>,
}

/// The destination as a delivery sees it when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationState {
    pub status: DestinationStatus,
    /// Its health says failing: too many permanent failures in a row.
    pub failing: bool,
}

/// How far the delivery got, with what was learnt at that point.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// The task was just taken; `destination` is `None` when it no longer exists.
    Taken {
        destination: Option<DestinationState>,
    },
    /// The worker tried to claim the object key and, if that worked, an upload slot.
    Claimed { key: bool, slot: bool },
    /// Both claims are held; `marker` is the newest result already at `key`.
    Locked {
        key: &'a str,
        marker: Option<&'a Marker>,
    },
    /// The attempt ended.
    Attempted(Result<(), &'a PipelineError>),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Go on to the next stage (claim, check the key, attempt).
    Proceed,
    /// End this run of the task.
    End(End),
}

/// How a run of a task ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The delivery is already final: this task is a duplicate and does nothing.
    Skip,
    /// Park the task until the destination is active again.
    Hold(HoldReason),
    /// A newer result is at the key: do not upload.
    Supersede {
        key: String,
        /// The delivery that put the newer result there.
        newer: String,
        error: DeliveryError,
    },
    /// Give up for good and dead-letter the task.
    Fail {
        error: DeliveryError,
        /// The failure counts against the destination's health: a permanent failure
        /// [`charged_to`] the destination (its store's answer). Not one of the rows' source
        /// or content, of Courier itself, or exhausted retries.
        strike: bool,
    },
    /// A transient failure: schedule the next attempt at `at`.
    Retry {
        at: DateTime<Utc>,
        delay: Duration,
        error: DeliveryError,
    },
    /// Put the task back untried, to run at `at`.
    Reschedule { at: DateTime<Utc>, busy: Busy },
    /// The object is in the bucket.
    Delivered,
}

/// Why a task is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    Paused,
    Failing,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Paused => "paused",
            HoldReason::Failing => "failing",
        }
    }
}

/// What was busy when a task was put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Another delivery of the same object key is under way.
    Key,
    /// The destination has its fleet-wide share of uploads in flight.
    Slots,
    /// Another delivery took the object key's lock while this one uploaded; the upload
    /// was aborted.
    KeyLost,
}

/// The transition for `stage`, given `facts`. `rng` draws the retry jitter.
pub fn decide(facts: &Facts<'_>, stage: Stage<'_>, rng: &mut impl Rng) -> Transition {
    let end = match stage {
        Stage::Taken { destination } => taken(facts, destination),
        Stage::Claimed { key, slot } => claimed(facts, key, slot),
        Stage::Locked { key, marker } => locked(facts, key, marker),
        Stage::Attempted(outcome) => Some(attempted(facts, outcome, rng)),
    };
    end.map_or(Transition::Proceed, Transition::End)
}

fn taken(facts: &Facts<'_>, destination: Option<DestinationState>) -> Option<End> {
    let status = facts.record.status;
    if status.is_final() && status != DeliveryStatus::Failed {
        return Some(End::Skip);
    }
    let age = (facts.now - facts.task.enqueued_at)
        .to_std()
        .unwrap_or_default();
    if age > facts.bounds.horizon {
        return Some(End::Fail {
            error: DeliveryError::new(
                ErrorCode::DeliveryExpired,
                format!(
                    "not uploaded: enqueued {}s ago, longer than the {}s for which a key \
                     remembers its newest result; it could overwrite a newer one unnoticed",
                    age.as_secs(),
                    facts.bounds.horizon.as_secs()
                ),
            ),
            strike: false,
        });
    }
    let Some(destination) = destination else {
        return Some(End::Fail {
            error: DeliveryError::new(
                ErrorCode::DestinationNotFound,
                format!("destination {} no longer exists", facts.task.destination_id),
            ),
            strike: false,
        });
    };
    let why = if destination.status == DestinationStatus::Paused {
        HoldReason::Paused
    } else if destination.failing {
        HoldReason::Failing
    } else {
        return None;
    };
    if age > facts.bounds.held_max_age {
        return Some(End::Fail {
            error: held_too_long(age, facts.bounds.held_max_age),
            strike: false,
        });
    }
    Some(End::Hold(why))
}

/// Why a delivery enqueued `age` ago is held no longer, when the bound is `max_age`: both
/// a worker about to hold it and the sweep of the held lists ([`crate::janitor`]) say so.
pub fn held_too_long(age: Duration, max_age: Duration) -> DeliveryError {
    DeliveryError::new(
        ErrorCode::HeldTooLong,
        format!(
            "held while its destination was paused or failing until {}s after it was \
             enqueued; a delivery is held for at most {}s (COURIER_HELD_MAX_AGE_SECS); \
             replay it once the destination is active",
            age.as_secs(),
            max_age.as_secs()
        ),
    )
}

fn claimed(facts: &Facts<'_>, key: bool, slot: bool) -> Option<End> {
    let busy = if !key {
        Busy::Key
    } else if !slot {
        Busy::Slots
    } else {
        return None;
    };
    Some(End::Reschedule {
        at: facts.now + BUSY_DELAY,
        busy,
    })
}

fn locked(facts: &Facts<'_>, key: &str, marker: Option<&Marker>) -> Option<End> {
    let newer = marker.filter(|m| m.completed_at > facts.task.completed_at)?;
    Some(End::Supersede {
        key: key.to_owned(),
        newer: newer.delivery_id.clone(),
        error: DeliveryError::new(
            ErrorCode::Superseded,
            format!(
                "not uploaded: {key} already holds a newer result (delivery {}, completed \
                 at {}); an older result must not overwrite it",
                newer.delivery_id,
                newer.completed_at.to_rfc3339()
            ),
        ),
    })
}

/// Who caused a failed attempt. The rows are charged for whatever went wrong reading them
/// (even a store code: a missing staged object is `NoSuchKey` from the staging store, not
/// from the destination) or rendering them; Courier for its own disk; and a failure of the
/// destination's store as its code says ([`ErrorCode::charged_to`]).
pub fn charged_to(e: &PipelineError) -> ChargedTo {
    match e {
        PipelineError::Render(_) => ChargedTo::Rows,
        PipelineError::Local(_) => ChargedTo::Courier,
        PipelineError::Source(f) => match f.code.charged_to() {
            ChargedTo::Destination => ChargedTo::Rows,
            other => other,
        },
        PipelineError::Io(f) => f.code.charged_to(),
        // Never charged: the attempt is not counted (see [`attempted`]).
        PipelineError::Stopped => ChargedTo::Courier,
    }
}

fn attempted(facts: &Facts<'_>, outcome: Result<(), &PipelineError>, rng: &mut impl Rng) -> End {
    let Err(e) = outcome else {
        return End::Delivered;
    };
    let error = e.error();
    // Not a failure of this delivery: the key's other delivery decides what is there;
    // this one runs again once the key is free (and may then be superseded).
    if let PipelineError::Stopped = e {
        return End::Reschedule {
            at: facts.now + BUSY_DELAY,
            busy: Busy::KeyLost,
        };
    }
    if e.class() == ErrorClass::Permanent {
        return End::Fail {
            error,
            strike: charged_to(e) == ChargedTo::Destination,
        };
    }
    let retry = &facts.task.retry;
    let elapsed = retry.elapsed(facts.now);
    match facts.policy.next_delay(retry.attempts, elapsed, rng) {
        Some(delay) => End::Retry {
            at: facts.now + delay,
            delay,
            error,
        },
        None => End::Fail {
            error: DeliveryError::new(
                ErrorCode::RetriesExhausted,
                format!(
                    "gave up after {} attempts over {}s; the last error was {}: {}",
                    retry.attempts,
                    elapsed.as_secs(),
                    error.code,
                    error.message
                ),
            ),
            strike: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use courier_core::delivery::{DeliveryStatus, PartnerInventoryId, RetryState};
    use courier_core::rows::InlineRows;
    use courier_core::{Compression, DeliveryId, DestinationId, Format, TenantId};
    use courier_s3::S3Failure;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap()
    }

    fn task() -> DeliveryTask {
        DeliveryTask {
            delivery_id: DeliveryId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            destination_id: DestinationId::generate(),
            job_id: "job-1".into(),
            partner_inventory_id: PartnerInventoryId::parse("INV-1").unwrap(),
            completed_at: at(0),
            columns: vec!["a".into()],
            rows: InlineRows::default(),
            rows_url: None,
            column_types: Default::default(),
            enqueued_at: at(0),
            retry: RetryState::default(),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }

    /// Held up to 100 s after enqueue; retries for 60 s (the policy's); dead letters kept
    /// 1000 s: the horizon is 100 + 60 + 1000 + 60 = 1220 s.
    fn bounds() -> Bounds {
        Bounds::new(
            Duration::from_secs(100),
            policy().max_elapsed,
            Duration::from_secs(1000),
        )
    }

    /// A transient or permanent store failure.
    fn io(code: &str, status: Option<u16>) -> PipelineError {
        PipelineError::Io(S3Failure {
            status,
            ..S3Failure::new(code.into(), format!("{code} happened"))
        })
    }

    /// Decides `stage` for a record in `status` and a task whose retry state is `retry`,
    /// at time `now` (seconds after the task was enqueued), with a seeded RNG.
    fn run(status: DeliveryStatus, retry: RetryState, now: i64, stage: Stage<'_>) -> Transition {
        let mut task = task();
        task.retry = retry;
        let mut record = DeliveryRecord::queued(&task, Format::Csv, Compression::None, 0, at(0));
        record.status = status;
        let policy = policy();
        let bounds = bounds();
        let facts = Facts {
            record: &record,
            task: &task,
            policy: &policy,
            bounds: &bounds,
            now: at(now),
        };
        decide(&facts, stage, &mut StdRng::seed_from_u64(7))
    }

    fn fresh(stage: Stage<'_>) -> Transition {
        run(DeliveryStatus::Queued, RetryState::default(), 0, stage)
    }

    /// `n` attempts made, the first at time 0.
    fn after(n: u32) -> RetryState {
        RetryState {
            attempts: n,
            first_attempt_at: Some(at(0)),
        }
    }

    fn code(t: &Transition) -> Option<&str> {
        match t {
            Transition::End(End::Fail { error, .. } | End::Retry { error, .. }) => {
                Some(&error.code)
            }
            Transition::End(End::Supersede { error, .. }) => Some(&error.code),
            _ => None,
        }
    }

    const ACTIVE: DestinationState = DestinationState {
        status: DestinationStatus::Active,
        failing: false,
    };

    #[test]
    fn a_taken_task() {
        use DeliveryStatus::*;
        let paused = DestinationState {
            status: DestinationStatus::Paused,
            ..ACTIVE
        };
        let failing = DestinationState {
            failing: true,
            ..ACTIVE
        };
        let both = DestinationState {
            failing: true,
            ..paused
        };
        let hold = |r| Transition::End(End::Hold(r));
        let table = [
            // (record status, destination, expected)
            (Queued, Some(ACTIVE), Transition::Proceed),
            (Retrying, Some(ACTIVE), Transition::Proceed),
            (InProgress, Some(ACTIVE), Transition::Proceed),
            (Held, Some(ACTIVE), Transition::Proceed),
            // A failed delivery runs again when its dead letter is replayed.
            (Failed, Some(ACTIVE), Transition::Proceed),
            (Delivered, Some(ACTIVE), Transition::End(End::Skip)),
            (Superseded, Some(ACTIVE), Transition::End(End::Skip)),
            // A duplicate is skipped before anything else is looked at.
            (Delivered, None, Transition::End(End::Skip)),
            (Queued, Some(paused), hold(HoldReason::Paused)),
            (Queued, Some(failing), hold(HoldReason::Failing)),
            (Queued, Some(both), hold(HoldReason::Paused)),
        ];
        for (status, destination, expected) in table {
            let got = run(
                status,
                RetryState::default(),
                0,
                Stage::Taken { destination },
            );
            assert_eq!(got, expected, "{status:?} {destination:?}");
        }
    }

    #[test]
    fn the_horizon_and_the_marker_cover_every_way_a_delivery_can_still_run() {
        let b = bounds();
        assert_eq!(b.horizon, Duration::from_secs(1220));
        // A horizon under a day is its own margin.
        assert_eq!(b.marker_ttl(), Duration::from_secs(2 * 1220));
        let defaults = Bounds::new(
            Duration::from_secs(30 * 24 * 3600),
            Duration::from_secs(1800),
            Duration::from_secs(7 * 24 * 3600),
        );
        assert_eq!(defaults.horizon, Duration::from_secs((37 * 24 + 1) * 3600));
        assert_eq!(defaults.marker_ttl().as_secs(), (38 * 24 + 1) * 3600);
    }

    /// A task enqueued at 0 taken at `now`: held until 100 s, never uploaded after 1220 s.
    #[test]
    fn old_deliveries_are_neither_held_nor_uploaded_for_ever() {
        use DeliveryStatus::*;
        let paused = Some(DestinationState {
            status: DestinationStatus::Paused,
            ..ACTIVE
        });
        let failing = Some(DestinationState {
            failing: true,
            ..ACTIVE
        });
        let hold = |r| Transition::End(End::Hold(r));
        /// (record status, taken at, destination, the transition or the failure's code)
        type Row = (
            DeliveryStatus,
            i64,
            Option<DestinationState>,
            Result<Transition, &'static str>,
        );
        let table: [Row; 10] = [
            (Queued, 100, paused, Ok(hold(HoldReason::Paused))),
            (Held, 100, failing, Ok(hold(HoldReason::Failing))),
            (Held, 101, paused, Err("HeldTooLong")),
            (Held, 101, failing, Err("HeldTooLong")),
            (Held, 101, Some(ACTIVE), Ok(Transition::Proceed)),
            (Failed, 1220, Some(ACTIVE), Ok(Transition::Proceed)),
            (Failed, 1221, Some(ACTIVE), Err("DeliveryExpired")),
            (Held, 1221, paused, Err("DeliveryExpired")),
            (Queued, 1221, None, Err("DeliveryExpired")),
            // A duplicate of a finished delivery is skipped however old.
            (
                Delivered,
                5000,
                Some(ACTIVE),
                Ok(Transition::End(End::Skip)),
            ),
        ];
        for (status, now, destination, expected) in table {
            let got = run(
                status,
                RetryState::default(),
                now,
                Stage::Taken { destination },
            );
            match expected {
                Ok(t) => assert_eq!(got, t, "{status:?} at {now} {destination:?}"),
                Err(want) => {
                    let Transition::End(End::Fail { error, strike }) = &got else {
                        panic!("{status:?} at {now} {destination:?}: {got:?}")
                    };
                    assert_eq!((error.code.as_str(), *strike), (want, false), "{got:?}");
                }
            }
        }
        let Transition::End(End::Fail { error, .. }) = run(
            Held,
            RetryState::default(),
            101,
            Stage::Taken {
                destination: paused,
            },
        ) else {
            panic!("not failed")
        };
        assert_eq!(
            error.message,
            "held while its destination was paused or failing until 101s after it was \
             enqueued; a delivery is held for at most 100s (COURIER_HELD_MAX_AGE_SECS); \
             replay it once the destination is active"
        );
    }

    #[test]
    fn a_missing_destination_fails_without_a_strike() {
        let t = fresh(Stage::Taken { destination: None });
        let Transition::End(End::Fail { error, strike }) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(error.code, "DestinationNotFound");
        assert!(error.message.ends_with("no longer exists"), "{error:?}");
        assert!(!strike);
    }

    #[test]
    fn busy_claims_reschedule_a_second_later() {
        let table = [
            (false, false, Some(Busy::Key)),
            (false, true, Some(Busy::Key)),
            (true, false, Some(Busy::Slots)),
            (true, true, None),
        ];
        for (key, slot, busy) in table {
            let got = run(
                DeliveryStatus::Queued,
                RetryState::default(),
                5,
                Stage::Claimed { key, slot },
            );
            let expected = busy.map_or(Transition::Proceed, |busy| {
                Transition::End(End::Reschedule { at: at(6), busy })
            });
            assert_eq!(got, expected, "key {key} slot {slot}");
        }
    }

    #[test]
    fn only_a_newer_marker_supersedes() {
        let marker = |secs| Marker {
            completed_at: at(secs),
            delivery_id: "dlv_newer".into(),
        };
        let (older, same, newer) = (marker(-1), marker(0), marker(1));
        for (m, proceeds) in [(None, true), (Some(&older), true), (Some(&same), true)] {
            let got = fresh(Stage::Locked {
                key: "k.csv",
                marker: m,
            });
            assert_eq!(got == Transition::Proceed, proceeds, "{m:?}");
        }
        let got = fresh(Stage::Locked {
            key: "k.csv",
            marker: Some(&newer),
        });
        let Transition::End(End::Supersede { key, newer, error }) = &got else {
            panic!("{got:?}")
        };
        assert_eq!((key.as_str(), newer.as_str()), ("k.csv", "dlv_newer"));
        assert_eq!(code(&got), Some("Superseded"));
        assert_eq!(
            error.message,
            format!(
                "not uploaded: k.csv already holds a newer result (delivery dlv_newer, \
                 completed at {}); an older result must not overwrite it",
                at(1).to_rfc3339()
            )
        );
    }

    /// A failure of the rows' source.
    fn source(code: &str, status: Option<u16>) -> PipelineError {
        PipelineError::Source(S3Failure {
            status,
            ..S3Failure::new(code.into(), format!("{code} happened"))
        })
    }

    /// What an attempt that failed comes to: it fails with a code, striking the
    /// destination or not, or it is tried again.
    #[derive(Debug, PartialEq)]
    enum Then<'a> {
        Fail(&'a str, bool),
        Retry(&'a str),
    }

    /// Whether the attempt that failed with `e` comes to `expected`.
    fn comes_to(e: &PipelineError, expected: &Then<'_>) -> bool {
        let got = run(
            DeliveryStatus::InProgress,
            after(1),
            0,
            Stage::Attempted(Err(e)),
        );
        let got = match &got {
            Transition::End(End::Fail { error, strike }) => Then::Fail(&error.code, *strike),
            Transition::End(End::Retry { error, .. }) => Then::Retry(&error.code),
            other => panic!("{e:?}: {other:?}"),
        };
        &got == expected
    }

    /// Every kind of failed attempt: whether it fails or retries, and whether it counts
    /// against the destination's health (only a permanent failure of its own store does).
    #[test]
    fn attempt_outcomes_are_charged_to_who_caused_them() {
        use Then::{Fail, Retry};
        let table: Vec<(PipelineError, Then<'_>, ChargedTo)> = vec![
            // The destination's store: permanent answers strike, the rest retry.
            (
                io("AccessDenied", Some(403)),
                Fail("AccessDenied", true),
                ChargedTo::Destination,
            ),
            (
                io("NoSuchBucket", Some(404)),
                Fail("NoSuchBucket", true),
                ChargedTo::Destination,
            ),
            (
                io("SomethingNew", Some(400)),
                Fail("SomethingNew", true),
                ChargedTo::Destination,
            ),
            (
                io("EgressRefused", None),
                Fail("EgressRefused", true),
                ChargedTo::Destination,
            ),
            (
                io("DefaultChainNotAllowed", None),
                Fail("DefaultChainNotAllowed", true),
                ChargedTo::Destination,
            ),
            (
                io("SlowDown", Some(503)),
                Retry("SlowDown"),
                ChargedTo::Destination,
            ),
            (
                io("ConnectionFailed", None),
                Retry("ConnectionFailed"),
                ChargedTo::Destination,
            ),
            (
                io("UploadStopped", None),
                Retry("UploadStopped"),
                ChargedTo::Destination,
            ),
            // The rows' source: never a strike, whatever it answered.
            (
                source("RowsUnavailable", Some(404)),
                Fail("RowsUnavailable", false),
                ChargedTo::Rows,
            ),
            (
                source("RowsUnavailable", Some(302)),
                Fail("RowsUnavailable", false),
                ChargedTo::Rows,
            ),
            (
                source("InvalidRowsUrl", None),
                Fail("InvalidRowsUrl", false),
                ChargedTo::Rows,
            ),
            (
                source("RowsUrlOutsideStaging", None),
                Fail("RowsUrlOutsideStaging", false),
                ChargedTo::Rows,
            ),
            // A missing or forbidden staged object: the staging store's code, the rows' fault.
            (
                source("NoSuchKey", Some(404)),
                Fail("NoSuchKey", false),
                ChargedTo::Rows,
            ),
            (
                source("AccessDenied", Some(403)),
                Fail("AccessDenied", false),
                ChargedTo::Rows,
            ),
            // The rows' host refused by the egress policy is not the destination's endpoint.
            (
                source("EgressRefused", None),
                Fail("EgressRefused", false),
                ChargedTo::Rows,
            ),
            (
                source("RowsUnavailable", Some(503)),
                Retry("RowsUnavailable"),
                ChargedTo::Rows,
            ),
            (
                source("SourceReadFailed", None),
                Retry("SourceReadFailed"),
                ChargedTo::Rows,
            ),
            (
                source("ConnectionFailed", None),
                Retry("ConnectionFailed"),
                ChargedTo::Rows,
            ),
            // A worker without a staging store: Courier's configuration.
            (
                source("StagingNotConfigured", None),
                Fail("StagingNotConfigured", false),
                ChargedTo::Courier,
            ),
            // Rows that cannot be rendered (bad JSON rows, a value that does not fit).
            (
                PipelineError::Render("rows line 3 is not a JSON object".into()),
                Fail("RenderFailed", false),
                ChargedTo::Rows,
            ),
            // The worker's own disk: transient, Courier's.
            (
                PipelineError::Local("No space left on device".into()),
                Retry("LocalIoFailed"),
                ChargedTo::Courier,
            ),
        ];
        for (e, expected, charged) in &table {
            assert!(comes_to(e, expected), "{e:?} should come to {expected:?}");
            assert_eq!(charged_to(e), *charged, "{e:?}");
        }

        let render = PipelineError::Render("row 3 is not an object".into());
        let Transition::End(End::Fail { error, .. }) = run(
            DeliveryStatus::InProgress,
            after(1),
            0,
            Stage::Attempted(Err(&render)),
        ) else {
            panic!()
        };
        assert_eq!(error.message, "row 3 is not an object");
        let ok = run(
            DeliveryStatus::InProgress,
            after(1),
            0,
            Stage::Attempted(Ok(())),
        );
        assert_eq!(ok, Transition::End(End::Delivered));
    }

    /// A lost key lock is no failure: the task goes back untried, a second later, however
    /// many attempts it made (the retry policy is not consulted).
    #[test]
    fn a_lost_key_lock_reschedules_without_counting_an_attempt() {
        for made in [1, 3] {
            let got = run(
                DeliveryStatus::InProgress,
                after(made),
                7,
                Stage::Attempted(Err(&PipelineError::Stopped)),
            );
            assert_eq!(
                got,
                Transition::End(End::Reschedule {
                    at: at(8),
                    busy: Busy::KeyLost
                }),
                "after {made} attempts"
            );
        }
    }

    /// A local disk that stays full is retried like any transient failure, and gives up
    /// without a strike.
    #[test]
    fn a_full_disk_retries_then_gives_up_without_a_strike() {
        let full = PipelineError::Local(
            "the worker could not write the rendered file locally: No space left on device".into(),
        );
        let got = run(
            DeliveryStatus::InProgress,
            after(3),
            12,
            Stage::Attempted(Err(&full)),
        );
        let Transition::End(End::Fail { error, strike }) = got else {
            panic!("{got:?}")
        };
        assert!(!strike);
        assert_eq!(error.code, "RetriesExhausted");
        assert_eq!(
            error.message,
            "gave up after 3 attempts over 12s; the last error was LocalIoFailed: the worker \
             could not write the rendered file locally: No space left on device"
        );
    }

    /// The retry delays are exact: the policy's jitter from the injected RNG.
    #[test]
    fn a_transient_failure_retries_at_the_policys_exact_delay() {
        let slow = io("SlowDown", Some(503));
        for (made, now) in [(1, 0), (2, 3)] {
            let got = run(
                DeliveryStatus::InProgress,
                after(made),
                now,
                Stage::Attempted(Err(&slow)),
            );
            let expected = policy()
                .next_delay(
                    made,
                    Duration::from_secs(now as u64),
                    &mut StdRng::seed_from_u64(7),
                )
                .unwrap();
            let Transition::End(End::Retry {
                at: when,
                delay,
                error,
            }) = got
            else {
                panic!("{got:?}")
            };
            assert_eq!(delay, expected);
            assert_eq!(when, at(now) + delay);
            assert_eq!(
                error,
                DeliveryError::new(ErrorCode::SlowDown, "SlowDown happened")
            );
        }
    }

    #[test]
    fn retries_end_after_max_attempts_or_max_elapsed() {
        let slow = io("SlowDown", Some(503));
        let exhausted = |retry, now| {
            let got = run(
                DeliveryStatus::InProgress,
                retry,
                now,
                Stage::Attempted(Err(&slow)),
            );
            let Transition::End(End::Fail { error, strike }) = got else {
                panic!("{got:?}")
            };
            assert!(!strike);
            assert_eq!(error.code, "RetriesExhausted");
            error.message
        };
        assert_eq!(
            exhausted(after(3), 12),
            "gave up after 3 attempts over 12s; the last error was SlowDown: SlowDown happened"
        );
        assert_eq!(
            exhausted(after(1), 60),
            "gave up after 1 attempts over 60s; the last error was SlowDown: SlowDown happened"
        );
    }
}
