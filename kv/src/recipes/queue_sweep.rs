//! The sweep of stale in-flight records: an at-most-once claim whose consumer never
//! came back (its process died between the claim and the acknowledgement, or the
//! store stayed unreachable for longer than the acknowledgement's budget) leaves its
//! item in `Q/c/<call id>/…`, invisible to every consumer. Each call id starts with
//! the wall-clock time of the claim in milliseconds (`<unix ms %013d>-<random>`), and
//! any consumer of the queue puts a record older than [`STALE_CLAIM`] back at its
//! place (as a cancelled dequeue's put-back does, guarded on the record, so it races
//! harmlessly with its owner's own acknowledgement or put-back).
//!
//! When: on the first dequeue or receive of a queue handle and then at most every
//! [`SWEEP_EVERY`]; a waiting consumer also wakes when the oldest record it saw comes
//! due. So an item is invisible for at most [`STALE_CLAIM`] plus the next sweep
//! (immediate if a consumer is waiting), give or take the clock skew between the
//! claiming and the sweeping hosts. The price: an item whose delivery succeeded but
//! whose acknowledgement never reached the store (the store unreachable for
//! [`STALE_CLAIM`]) is delivered again. A record whose call id carries no time is
//! swept at once.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::kv::{Kv, Range};
use distsync_core::error::Result;

use super::{put_back, KvQueue, Layout};
use distsync_core::queue::STALE_CLAIM;
use distsync_core::raw::call_id;

/// How often a queue handle looks for stale records.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// A call id carrying the claim's wall-clock time: `<unix ms %013d>-<call id>`.
pub(super) fn claim_call_id() -> String {
    format!("{:013}-{}", unix_millis(), call_id())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The claim time a call id carries.
fn claimed_at(call: &str) -> Option<u64> {
    let (millis, _) = call.split_once('-')?;
    if millis.len() != 13 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    millis.parse().ok()
}

/// When a handle last swept, and when the oldest record it saw comes due.
#[derive(Debug, Default)]
pub(super) struct SweepState {
    last: Option<Instant>,
    next: Option<Instant>,
}

impl KvQueue {
    fn sweep_state(&self) -> std::sync::MutexGuard<'_, SweepState> {
        self.sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sweeps unless this handle did less than [`SWEEP_EVERY`] ago.
    pub(super) async fn sweep_if_due(&self) {
        let due = self
            .sweep_state()
            .last
            .is_none_or(|last| last.elapsed() >= SWEEP_EVERY);
        if due {
            self.sweep_now().await;
        }
    }

    /// How long until the oldest in-flight record seen by the last sweep comes due.
    pub(super) fn next_sweep_in(&self) -> Option<Duration> {
        self.sweep_state()
            .next
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Puts back every stale record now; failures are logged (the next sweep tries
    /// again).
    pub(super) async fn sweep_now(&self) {
        self.sweep_state().last = Some(Instant::now());
        let next = match sweep(&*self.kv, &self.layout).await {
            Ok(next) => next.map(|due| Instant::now() + due),
            Err(error) => {
                tracing::warn!(queue = %self.layout.root, %error, "sweeping stale in-flight queue records failed");
                Some(Instant::now() + SWEEP_EVERY)
            }
        };
        self.sweep_state().next = next;
    }
}

/// Puts back the items of stale records; returns how long until the next record comes
/// due, if any is left.
async fn sweep(kv: &dyn Kv, layout: &Layout) -> Result<Option<Duration>> {
    let prefix = layout.all_claims();
    let records = kv.range(Range::prefix(&prefix)).await?;
    let now = unix_millis();
    let stale = u64::try_from(STALE_CLAIM.as_millis()).unwrap_or(u64::MAX);
    let mut next: Option<u64> = None;
    for record in records.kvs {
        let Some((call, _)) = record
            .key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let Some(position) = layout.claim_position(call, &record.key) else {
            tracing::warn!(key = %record.key, "queue sweep skips a malformed in-flight key");
            continue;
        };
        let due = claimed_at(call).map_or(0, |at| at.saturating_add(stale));
        if due > now {
            let left = due - now;
            next = Some(next.map_or(left, |next| next.min(left)));
            continue;
        }
        tracing::warn!(
            record = %record.key,
            "putting back an in-flight queue item whose consumer never acknowledged it",
        );
        put_back(
            kv,
            layout,
            &record.key,
            record.create_revision,
            position,
            record.value.clone(),
        )
        .await?;
    }
    Ok(next.map(Duration::from_millis))
}

/// Guards the state with a `std` mutex (never held across an await).
pub(super) type Sweep = Mutex<SweepState>;
