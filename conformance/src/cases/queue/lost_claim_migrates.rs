//! A claim a lost dequeuer left behind, migrated. The store would put the claimed item
//! back once the claim is stale, so an export must carry it as a queue item, once,
//! where that put-back puts it: at its place, the front of its priority, except on
//! NATS, whose put-back writes it anew behind the items waiting at its priority (see
//! [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM) and docs/MIGRATING.md, "Claims
//! left by a dequeue"). Dropping it would lose an item the source still owed.
//!
//! The fault is [`super::lost_dequeuer`]'s, on a store of the case's own (an export
//! reads the whole store, other cases' live holds included), each round's queue
//! holding [`BEHIND`] items behind the head the dequeuer takes. Each round whose
//! dequeuer did not get its item migrates the store into a new memory store at once:
//! every client here keeps the default stale bound, so no consumer can have put the
//! claim back. The destination's queue must hold the head once, at the put-back's
//! place, and the items behind it once each, in order. Then a `try_dequeue` on the
//! source tells which cut the round was: the head still there (the cut came before the
//! claim, and the queue copied as it was) or the first item behind it (the head was
//! claimed, its claim left behind).

use std::sync::Arc;
use std::time::Duration;

use distsync_core::migrate::{migrate, MigrateOptions, QueueItem};
use distsync_core::{Backend, Bytes};
use distsync_kv::memory::MemoryBackend;
use tokio::time::Instant;

use super::lost_dequeuer::{scan_cut_points, Judge, LostRound};
use crate::cases::migrate::fresh_store;
use crate::check::{ensure, ms, violated, within, Bounded, Check, Context, Holds, LONG};
use crate::harness::Harness;

/// The items enqueued behind the claimed head: enough to show their order, and which
/// side of them the head lands on.
const BEHIND: usize = 2;

/// See the module docs.
pub(super) async fn lost_claim_migrates(h: Harness) -> Check {
    let (_fresh, store) = fresh_store(&h, "queue_lost_claim_migrates").await?;
    let mut copy = Copy {
        source: Arc::clone(store.backend()),
        behind_waiting: puts_back_behind_waiting(h.backend().as_ref()),
        before_claim: 0,
        claims: 0,
        slowest: Duration::ZERO,
    };
    let rounds = scan_cut_points(&store, "lost-claim-migrates", BEHIND, &mut copy).await?;
    let place = if copy.behind_waiting {
        "behind the items waiting at its priority"
    } else {
        "at the front of its priority"
    };
    Ok(Holds::figure(
        format!(
            "{rounds} cut points: {} before the claim (the queue copied as it was), {} at the \
             claim (the claimed item copied once, {place}); the slowest migration {}",
            copy.before_claim,
            copy.claims,
            ms(copy.slowest)
        ),
        format!(
            "the claim of a dequeuer lost between its claim and the hand-over migrates as its \
             item, once, {place}, before any stale bound: nothing lost, nothing twice"
        ),
    ))
}

/// Whether `backend`'s put-back writes a claimed item anew behind the items waiting at
/// its priority (NATS), rather than at its place (every other store).
fn puts_back_behind_waiting(backend: &dyn Backend) -> bool {
    backend.capabilities().backend == "nats"
}

/// The judge of each round: migrates the source into a new memory store and reads the
/// round's queue from the destination's export.
struct Copy {
    /// The store under test, the migration's source.
    source: Arc<dyn Backend>,
    /// Whether the source's put-back, and so its export, puts a claimed item behind
    /// the items waiting at its priority ([`puts_back_behind_waiting`]).
    behind_waiting: bool,
    /// Rounds whose cut came before the claim.
    before_claim: usize,
    /// Rounds that left a claim behind.
    claims: usize,
    /// The slowest migration.
    slowest: Duration,
}

impl Judge for Copy {
    async fn judge(&mut self, round: LostRound) -> Check<bool> {
        let LostRound {
            cut,
            queue,
            item,
            behind,
            ..
        } = round;
        let destination = MemoryBackend::new();
        let started = Instant::now();
        within(
            LONG,
            format!("cut after answer {cut}: migrating the store into a memory store"),
            migrate(&*self.source, &destination, &MigrateOptions::default()),
        )
        .await?;
        self.slowest = self.slowest.max(started.elapsed());
        let copied: Vec<Bytes> = within(LONG, "exporting the destination", destination.export())
            .await?
            .queues
            .remove(&queue)
            .unwrap_or_default()
            .into_iter()
            .map(|QueueItem { item, .. }| item)
            .collect();
        // Only the source's own consumers could put the claim back, and each keeps the
        // default stale bound: its head, if claimed, is claimed still.
        let head = self
            .source
            .queue(queue)
            .ctx("making a consumer of the source")?
            .try_dequeue()
            .bounded("the source's try_dequeue after the migration")
            .await?;
        let claim_left = if head.as_ref() == Some(&item) {
            false
        } else if head.as_ref() == behind.first() {
            true
        } else {
            return violated(format!(
                "cut after answer {cut}: after the migration the source's queue gave {head:?}, \
                 neither its head {item:?} nor the item behind it {:?}",
                behind.first()
            ));
        };
        let times = copied.iter().filter(|copied| **copied == item).count();
        ensure!(
            times == 1,
            "cut after answer {cut}: the destination's queue holds {item:?} (the head{}) {times} \
             times: {copied:?}",
            if claim_left { ", claimed" } else { "" }
        );
        let expected: Vec<Bytes> = if claim_left && self.behind_waiting {
            behind.iter().chain([&item]).cloned().collect()
        } else {
            [&item].into_iter().chain(&behind).cloned().collect()
        };
        ensure!(
            copied == expected,
            "cut after answer {cut}: the destination's queue holds {copied:?}, expected \
             {expected:?} (the head {})",
            if claim_left {
                "claimed, its claim left behind"
            } else {
                "not claimed"
            }
        );
        if claim_left {
            self.claims += 1;
        } else {
            self.before_claim += 1;
        }
        Ok(claim_left)
    }
}
