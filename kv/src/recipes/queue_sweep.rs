//! The sweep of stale in-flight records: an at-most-once claim whose consumer never
//! came back (its process died between the claim and the acknowledgement, or the
//! store stayed unreachable for longer than the acknowledgement's budget) leaves its
//! item in `Q/c/<call id>/…`, invisible to every consumer. Each call id starts with
//! the wall-clock time of the claim in milliseconds (`<unix ms %013d>-<random>`), and
//! any consumer of the queue puts a record older than the backend's stale bound
//! ([`KvBackend::with_stale_claim`](crate::recipes::KvBackend::with_stale_claim), by
//! default [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM)) back at its
//! place (as a cancelled dequeue's put-back does, guarded on the record, so it races
//! harmlessly with its owner's own acknowledgement or put-back).
//!
//! When: as [`ClaimSweeps`](distsync_core::raw::ClaimSweeps) schedules it (at a
//! handle's first dequeue or receive, then at most every `SWEEP_EVERY`, and when the
//! oldest record seen comes due, at once for a waiting consumer); give or take the
//! clock skew between the claiming and the sweeping hosts. The price: an item whose
//! delivery succeeded but whose acknowledgement never reached the store (the store
//! unreachable for that long) is delivered again. A record whose call id carries no
//! time is swept at once.

use std::time::Duration;

use crate::kv::{Kv, Range};
use distsync_core::error::Result;

use super::super::key::{digits, unix_nanos};
use super::{put_back, KvQueue, Layout};
use distsync_core::raw::call_id;

/// A call id carrying the claim's wall-clock time: `<unix ms %013d>-<call id>`.
pub(super) fn claim_call_id() -> String {
    format!("{:013}-{}", unix_millis(), call_id())
}

fn unix_millis() -> u64 {
    u64::try_from(unix_nanos() / 1_000_000).unwrap_or(u64::MAX)
}

/// The claim time a call id carries.
fn claimed_at(call: &str) -> Option<u64> {
    let (millis, _) = call.split_once('-')?;
    digits(millis, 13).then(|| millis.parse().ok())?
}

impl KvQueue {
    /// Sweeps when [`ClaimSweeps`](distsync_core::raw::ClaimSweeps) says it is due.
    pub(super) async fn sweep_if_due(&self) {
        let sweep = || sweep(&*self.kv, &self.layout, self.stale_claim);
        self.sweeps.sweep_if_due(&self.layout.root, sweep).await;
    }
}

/// Puts back the items of records older than `stale_claim`; returns how long until the
/// next record comes due, if any is left.
async fn sweep(kv: &dyn Kv, layout: &Layout, stale_claim: Duration) -> Result<Option<Duration>> {
    let prefix = layout.all_claims();
    let records = kv.range(Range::prefix(&prefix)).await?;
    let now = unix_millis();
    let stale = u64::try_from(stale_claim.as_millis()).unwrap_or(u64::MAX);
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
        let (key, revision) = (&record.key, record.create_revision);
        put_back(kv, layout, key, revision, position, record.value.clone()).await?;
    }
    Ok(next.map(Duration::from_millis))
}
