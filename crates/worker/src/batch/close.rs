//! One window, from claim to records: held while its destination is paused or failing;
//! else claimed (the claim renewed while the window is worked on, like a delivery's key
//! lock), streamed into its objects, then its batch records and its deliveries' records
//! written and the window deleted. A transient failure reschedules the window by the retry
//! policy; a permanent one (or the policy spent) fails its deliveries and leaves a dead
//! letter that replays the window.

use std::time::Instant;

use chrono::Utc;
use courier_core::ErrorCode;
use courier_core::batch::{BatchRecord, BatchRef, BatchStatus, batch_id};
use courier_core::delivery::{Attempt, DeliveryError, DeliveryRecord, DeliveryStatus};
use courier_core::destination::{Destination, DestinationStatus};
use courier_core::failure::ErrorClass;
use courier_s3::S3Failure;
use courier_store::batches::at;
use courier_store::{ClaimedWindow, DeadLetter, StoreError, WindowClaim, WindowId};
use tokio_util::sync::CancellationToken;

use super::Closer;
use super::stream::{Landed, Placement, WindowError, error_of, upload_window};
use crate::telemetry::{self, Outcome};

/// What became of one look at a due window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Its objects landed and its deliveries are `DELIVERED`.
    Delivered { objects: usize },
    /// Its destination is paused or failing: left open until it is active again.
    Held,
    /// Another worker holds it, it is not due by Redis's clock, or it is closed already.
    NotMine,
    /// The claim was lost midway; whoever holds it now finishes it.
    Lost,
    /// A transient failure: due again later.
    Retrying { code: String },
    /// Given up: its deliveries are `FAILED` and a dead letter can replay it.
    Failed { code: String },
}

impl Closer {
    /// Closes window `w` if it is this worker's to close. An `Err` is a failure of
    /// Courier's own storage; the window stays open and is looked at again.
    pub async fn close(&self, w: &WindowId) -> Result<Closed, StoreError> {
        let d = &self.deliverer;
        let dest = d.stores.destinations.get_any(&w.destination_id).await?;
        let mut held_too_long = false;
        if let Some(dest) = &dest {
            let failing = d.stores.health.get(&dest.id).await?.is_failing();
            if dest.spec.status == DestinationStatus::Paused || failing {
                // Held as long as a single delivery may be (`COURIER_HELD_MAX_AGE_SECS`,
                // counted from the window's start), then given up.
                let age = Utc::now().timestamp() - w.start;
                if age <= i64::try_from(d.bounds.held_max_age.as_secs()).unwrap_or(i64::MAX) {
                    return Ok(Closed::Held);
                }
                held_too_long = true;
            }
        }
        let token = format!("{}:{}", d.worker_name, ulid::Ulid::new());
        let ttl = self.settings.claim_ttl;
        let claimed = match self.batches.claim(w, &token, ttl).await? {
            WindowClaim::Claimed(c) => c,
            _ => return Ok(Closed::NotMine),
        };
        // Keep the claim while working; `lost` stops the upload if it goes.
        let lost = CancellationToken::new();
        let renewal = {
            let batches = self.batches.clone();
            let w = w.clone();
            let token = token.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(ttl / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match batches.renew(&w, &token, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not renew a batch window's claim")
                        }
                    }
                }
            })
        };
        let outcome = self
            .work(dest, &claimed, &token, &lost, held_too_long)
            .await;
        renewal.abort();
        outcome
    }

    /// What [`close`](Self::close) does with a claimed window, while the claim is renewed.
    async fn work(
        &self,
        dest: Option<Destination>,
        claimed: &ClaimedWindow,
        token: &str,
        lost: &CancellationToken,
        held_too_long: bool,
    ) -> Result<Closed, StoreError> {
        let d = &self.deliverer;
        if held_too_long {
            let error = DeliveryError::new(
                ErrorCode::HeldTooLong,
                format!(
                    "the window was held longer than {} s while its destination was paused or \
                     failing",
                    d.bounds.held_max_age.as_secs()
                ),
            );
            return self.give_up(claimed, token, error).await;
        }
        let Some(dest) = dest else {
            let error = DeliveryError::new(
                ErrorCode::DestinationNotFound,
                "the destination was deleted before its window closed",
            );
            return self.give_up(claimed, token, error).await;
        };
        let started_at = Utc::now();
        let t0 = Instant::now();
        let result = self.upload(&dest, claimed, lost).await;
        match result {
            Ok((landed, placements)) => {
                self.delivered(&dest, claimed, token, landed, placements, started_at, t0)
                    .await
            }
            Err(WindowError::Stopped) => {
                tracing::warn!(
                    "lost a batch window's claim during its upload; its holder finishes it"
                );
                Ok(Closed::Lost)
            }
            Err(e) => self.failed(&dest, claimed, token, &e).await,
        }
    }

    async fn upload(
        &self,
        dest: &Destination,
        claimed: &ClaimedWindow,
        stop: &CancellationToken,
    ) -> Result<(Vec<Landed>, Vec<Placement>), WindowError> {
        let d = &self.deliverer;
        // A destination whose batching was turned off still gets its open windows, cut at
        // the default object size.
        let max_object_bytes = dest
            .spec
            .batch
            .map_or(courier_core::batch::DEFAULT_OBJECT_BYTES, |b| {
                b.max_object_bytes
            });
        // The fleet's identity only for the tenants it is lent to, and the client from the
        // cache every delivery uses (the egress policy applies in its connector).
        dest.spec
            .s3
            .credentials
            .lent_to(&dest.tenant, &d.uploader.default_chain_tenants)
            .map_err(|m| WindowError::S3(S3Failure::new(ErrorCode::DefaultChainNotAllowed, m)))?;
        let client = d
            .uploader
            .clients
            .get(&dest.id, &dest.spec.s3)
            .await
            .map_err(WindowError::S3)?;
        upload_window(
            &self.batches,
            &client,
            dest,
            &claimed.id,
            max_object_bytes,
            d.uploader.part_size,
            self.settings.page,
            stop,
        )
        .await
    }

    /// The objects landed: batch records, delivery records, then the window is deleted.
    #[allow(clippy::too_many_arguments)]
    async fn delivered(
        &self,
        dest: &Destination,
        claimed: &ClaimedWindow,
        token: &str,
        landed: Vec<Landed>,
        placements: Vec<Placement>,
        started_at: chrono::DateTime<Utc>,
        t0: Instant,
    ) -> Result<Closed, StoreError> {
        let d = &self.deliverer;
        let now = Utc::now();
        let attempts = claimed.attempts + 1;
        let bucket = dest.spec.s3.bucket.as_str();
        let window_start = at(claimed.id.start);
        let window_end = at(claimed.end);
        let batches: Vec<BatchRecord> = landed
            .iter()
            .map(|o| {
                let mine = placements.iter().filter(|p| p.sequence == o.sequence);
                BatchRecord {
                    id: batch_id(&o.id),
                    tenant: dest.tenant.clone(),
                    destination_id: dest.id.clone(),
                    bucket: bucket.to_owned(),
                    key: o.key.clone(),
                    window_start,
                    window_end,
                    sequence: o.sequence,
                    status: BatchStatus::Delivered,
                    rows: mine.clone().map(|p| p.rows).sum(),
                    deliveries: mine.count() as u64,
                    bytes: o.bytes,
                    etag: o.etag.clone(),
                    md5: Some(o.md5.clone()),
                    attempts,
                    error_code: None,
                    error_message: None,
                    updated_at: now,
                }
            })
            .collect();
        self.batches.put_records(&batches).await?;
        let took = t0.elapsed();
        // Each delivery's time from enqueue to its object, counted once the window is done.
        let mut ages = Vec::with_capacity(placements.len());
        for chunk in placements.chunks(256) {
            let ids: Vec<String> = chunk.iter().map(|p| p.delivery_id.clone()).collect();
            let records = d.stores.records.get_many_any(&ids).await?;
            let mut updated = Vec::with_capacity(chunk.len());
            for (p, record) in chunk.iter().zip(records) {
                // A record past its retention is not written again.
                let Some(mut record) = record else { continue };
                let Some(object) = landed.iter().find(|o| o.sequence == p.sequence) else {
                    continue;
                };
                push_attempt(&mut record, &d.worker_name, started_at, took, None);
                record.delivered_in_batch(
                    bucket,
                    BatchRef {
                        window_start,
                        window_end,
                        id: Some(batch_id(&object.id)),
                        key: Some(object.key.clone()),
                        first_line: p.first_line,
                        last_line: p.last_line,
                    },
                    object.etag.clone(),
                    object.md5.clone(),
                    now,
                );
                ages.push(record.age(now));
                updated.push(record);
            }
            d.stores.records.put_many(&updated).await?;
        }
        d.stores.health.record_success(&dest.id).await?;
        if self.batches.done(&claimed.id, token).await? {
            // Batched deliveries count among all deliveries (`courier_deliveries_total`),
            // once: a window redone by another worker is counted by the one that finishes it.
            for age in ages {
                telemetry::delivery_finished(Outcome::Delivered, dest.spec.format, age);
            }
        } else {
            tracing::warn!(
                "the batch window's claim expired before it was deleted; its next holder redoes it with the same keys"
            );
        }
        let lag = (now.timestamp() - claimed.end).max(0) as f64;
        for b in &batches {
            telemetry::batch_object_landed(b.rows, b.bytes);
        }
        telemetry::batch_window_closed("delivered", lag);
        tracing::info!(
            objects = landed.len(),
            rows = claimed.rows,
            lag_seconds = lag,
            "batch window delivered"
        );
        Ok(Closed::Delivered {
            objects: landed.len(),
        })
    }

    /// A failed try: rescheduled by the retry policy while it is transient and the policy
    /// allows, else given up.
    async fn failed(
        &self,
        dest: &Destination,
        claimed: &ClaimedWindow,
        token: &str,
        e: &WindowError,
    ) -> Result<Closed, StoreError> {
        let d = &self.deliverer;
        let (code, message) = error_of(e);
        let class = match e {
            WindowError::S3(f) => f.class(),
            _ => ErrorClass::Transient,
        };
        let attempts = claimed.attempts + 1;
        let first = if claimed.first_attempt_at > 0 {
            claimed.first_attempt_at
        } else {
            claimed.now
        };
        let error = DeliveryError::new(code, message);
        if class == ErrorClass::Transient {
            let elapsed =
                std::time::Duration::from_secs(u64::try_from(claimed.now - first).unwrap_or(0));
            let delay = d.retry.next_delay(attempts, elapsed, &mut rand::rng());
            if let Some(delay) = delay {
                let due = Utc::now().timestamp() + delay.as_secs().max(1) as i64;
                self.batches
                    .retry_later(&claimed.id, token, due, attempts, first)
                    .await?;
                telemetry::batch_window_closed("retried", 0.0);
                tracing::info!(code = %error.code, attempt = attempts, ?delay, "batch window failed; tried again later");
                return Ok(Closed::Retrying { code: error.code });
            }
            let spent = DeliveryError::new(
                ErrorCode::RetriesExhausted,
                format!(
                    "gave up after {attempts} tries; the last failed with {}: {}",
                    error.code, error.message
                ),
            );
            return self.give_up(claimed, token, spent).await;
        }
        if matches!(e, WindowError::S3(_)) {
            let health = d
                .stores
                .health
                .record_permanent_failure(
                    &dest.id,
                    &error.code,
                    &error.message,
                    d.failing_threshold,
                )
                .await?;
            if health.is_failing() {
                tracing::warn!("destination marked failing; its batch windows are held");
            }
        }
        self.give_up(claimed, token, error).await
    }

    /// Fails the window's deliveries with `error`, leaves a dead letter that replays the
    /// window, and takes the window out of the open ones (its entries kept for the replay).
    async fn give_up(
        &self,
        claimed: &ClaimedWindow,
        token: &str,
        error: DeliveryError,
    ) -> Result<Closed, StoreError> {
        let d = &self.deliverer;
        let w = &claimed.id;
        let now = Utc::now();
        let mut from = 0;
        loop {
            let entries = self.batches.entries(w, from, 256).await?;
            if entries.is_empty() {
                break;
            }
            from += entries.len() as u64;
            let ids: Vec<String> = entries.into_iter().map(|e| e.delivery_id).collect();
            let records = d.stores.records.get_many_any(&ids).await?;
            let mut updated = Vec::with_capacity(ids.len());
            for mut record in records.into_iter().flatten() {
                push_attempt(
                    &mut record,
                    &d.worker_name,
                    now,
                    std::time::Duration::ZERO,
                    Some(&error),
                );
                record.failed(error.clone(), now);
                telemetry::delivery_finished(Outcome::Dead, record.format, record.age(now));
                updated.push(record);
            }
            d.stores.records.put_many(&updated).await?;
        }
        d.stores
            .dead
            .add(&DeadLetter {
                id: w.letter_id(),
                destination_id: Some(w.destination_id.clone()),
                code: error.code.clone(),
                reason: format!(
                    "batch window {} of {}: {}",
                    at(w.start).to_rfc3339(),
                    w.destination_id,
                    error.message
                ),
                died_at: now,
                payload: serde_json::json!({
                    "batchWindow": {
                        "destinationId": w.destination_id,
                        "windowStart": w.start,
                    }
                }),
            })
            .await?;
        self.batches.fail(w, token, claimed.attempts + 1).await?;
        telemetry::batch_window_closed("failed", 0.0);
        tracing::warn!(code = %error.code, "batch window failed; its deliveries are dead-lettered");
        Ok(Closed::Failed { code: error.code })
    }
}

fn push_attempt(
    record: &mut DeliveryRecord,
    worker: &str,
    started_at: chrono::DateTime<Utc>,
    took: std::time::Duration,
    error: Option<&DeliveryError>,
) {
    let number = record.next_attempt_number();
    record.attempts.push(Attempt {
        number,
        worker: worker.to_owned(),
        started_at,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        outcome: if error.is_some() {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Delivered
        },
        error_code: error.map(|e| e.code.clone()),
        error_message: error.map(|e| e.message.clone()),
    });
}
