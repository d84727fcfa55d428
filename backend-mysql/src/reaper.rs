//! The reaper: one task per backend (so one per client process) that ends the leases
//! expired on the server's clock, deleting their keys in one revision each, and
//! keeps the log's history to its window. How the reapers of several processes race
//! is in the crate docs ("Leases"). It sleeps until the next expiry on the server's
//! clock, at most a quarter of the shortest live lease's TTL (a lease granted since by
//! another process is seen within that) and at most [`LONGEST_SLEEP`].

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::compaction;
use crate::kv::Core;
use crate::lease;

/// The longest sleep between two rounds (a store without leases is checked that
/// often for leases of other processes).
pub(crate) const LONGEST_SLEEP: Duration = Duration::from_secs(1);

/// The shortest sleep: expiries closer together than this are ended in one round.
const SHORTEST_SLEEP: Duration = Duration::from_millis(5);

/// How often the log is compacted to its window.
const COMPACT_EVERY: Duration = Duration::from_secs(10);

/// How many expired leases one round ends at most before it sleeps.
const PER_ROUND: u32 = 100;

/// The reaper's loop; it ends when the backend is dropped.
///
/// A round that fails (the server unreachable, a table gone) is tried again a second
/// later. The first failure of a run of them is a warning; the others are logged at
/// debug level, and the first round that succeeds after them at info level, so that a
/// process cut off from its server for minutes logs two lines, not one a second.
pub(crate) async fn run(core: Weak<Core>) {
    let mut compacted_at = Instant::now();
    let mut failing = false;
    loop {
        let Some(core) = core.upgrade() else {
            return;
        };
        let sleep = match round(&core, &mut compacted_at).await {
            Ok(sleep) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(backend = crate::BACKEND, "reaper: rounds succeed again");
                }
                sleep
            }
            Err(error) if failing => {
                tracing::debug!(backend = crate::BACKEND, %error, "reaper: a round failed again");
                LONGEST_SLEEP
            }
            Err(error) => {
                tracing::warn!(
                    backend = crate::BACKEND,
                    %error,
                    "reaper: a round failed; the next failures are logged at debug level until a round succeeds"
                );
                failing = true;
                LONGEST_SLEEP
            }
        };
        drop(core);
        tokio::time::sleep(sleep).await;
    }
}

/// One round: ends what has expired, compacts when due; returns how long to sleep.
async fn round(core: &Core, compacted_at: &mut Instant) -> distsync_core::Result<Duration> {
    for id in lease::expired(&core.pool, &core.tables, PER_ROUND).await? {
        if let Some((revision, events)) = lease::end(&core.pool, &core.tables, id, true).await? {
            tracing::debug!(
                backend = crate::BACKEND,
                lease = id,
                revision,
                "lease expired"
            );
            core.committed(&events);
        }
    }
    if compacted_at.elapsed() >= COMPACT_EVERY {
        *compacted_at = Instant::now();
        let retain = compaction::DEFAULT_RETAINED_REVISIONS;
        compaction::keep_window(&core.pool, &core.tables, retain).await?;
    }
    Ok(match lease::next_expiry(&core.pool, &core.tables).await? {
        Some((until, shortest)) => until
            .saturating_add(Duration::from_millis(1))
            .min(shortest / 4)
            .clamp(SHORTEST_SLEEP, LONGEST_SLEEP),
        None => LONGEST_SLEEP,
    })
}
