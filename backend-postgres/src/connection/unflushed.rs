//! Releases committed asynchronously, kept until a later synchronous commit of this
//! process shows they are durable, and made again when the server may have lost them.
//!
//! A release (`semaphore_leave`: an unlock, a resign, a withdrawn wait and its
//! tombstone) commits with `synchronous_commit = off` (see [`crate::waiter_line`],
//! "Asynchronous commits"): it returns without waiting for the WAL flush, and a crash
//! of the server before the flush loses it, bringing the entry back. Such an entry
//! would count as a holder (or a waiter) for as long as its session lives, and a
//! healthy session lives on: the name would be blocked until the session ends. So
//! every asynchronous release is recorded here until it is known durable, and made
//! again (the release is idempotent: an entry already gone is left alone) when the
//! server may have lost it.
//!
//! # Knowing a release durable, or maybe lost
//! The heartbeat ([`crate::connection::heartbeat`]) renews with a synchronous commit and reads, in
//! the same statement, the server's **epoch** (`server_epoch()`: the location and
//! timeline of its last checkpoint, from `pg_control_checkpoint()`). Crash recovery
//! always ends with a checkpoint (and a promotion changes the timeline), so the epoch
//! changes whenever unflushed WAL may have been lost; it also changes at every
//! ordinary checkpoint, which only costs releases made again for nothing.
//!
//! Each release is recorded with the epoch this process knew *before sending it*. A
//! renewal sent after the release returned, which commits synchronously and reads the
//! same epoch, proves the release durable: no crash came between the earlier reading
//! of that epoch and this one (the epoch would have moved), and the renewal's flush
//! covers every commit record written before its own, the release's included. Any
//! other outcome (another epoch, none known yet) makes the release again, once, in one
//! statement, which is then recorded in its turn.
//!
//! Where the epoch cannot be read (a role without access to `pg_control_checkpoint()`,
//! which PostgreSQL grants to every role by default), releases commit synchronously.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use distsync_core::raw::locked;

/// The most releases kept: past it the oldest is dropped (with a warning); at the
/// heartbeat's pace (every session renews every TTL/3) this holds several seconds of
/// releases at tens of thousands a second.
const MAX_PENDING: usize = 1 << 20;

/// One release to make again: `semaphore_leave(name_id, session, entry, tombstone)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) name_id: i32,
    pub(crate) session: i64,
    pub(crate) entry: i64,
    pub(crate) tombstone: bool,
}

struct Pending {
    seq: u64,
    /// The epoch known when the release was sent (`None`: none yet).
    epoch: Option<u64>,
    release: Release,
}

#[derive(Default)]
struct State {
    /// The last epoch read, and its number (epochs are numbered in the order read; a
    /// reading equal to the last keeps its number).
    epoch: Option<(String, u64)>,
    epochs: u64,
    next_seq: u64,
    pending: VecDeque<Pending>,
}

/// The asynchronous releases of one backend not yet known durable (see the module
/// docs).
#[derive(Default)]
pub(crate) struct Unflushed {
    state: Mutex<State>,
    /// Whether releases commit asynchronously (the epoch can be read).
    enabled: AtomicBool,
}

impl Unflushed {
    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Whether releases may commit asynchronously.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The number of the epoch known now, to pass to [`Unflushed::record`] once the
    /// release sent after this call has returned.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.state().epoch.as_ref().map(|(_, number)| *number)
    }

    /// Records an asynchronous release that returned, sent when `epoch` was known.
    pub(crate) fn record(&self, epoch: Option<u64>, release: Release) {
        let mut state = self.state();
        let seq = state.next_seq;
        state.next_seq += 1;
        if state.pending.len() >= MAX_PENDING {
            state.pending.pop_front();
            tracing::warn!(
                "too many asynchronous releases awaiting a flush; the oldest is no longer tracked"
            );
        }
        state.pending.push_back(Pending {
            seq,
            epoch,
            release,
        });
    }

    /// The mark of a renewal about to be sent: the releases recorded before it.
    pub(crate) fn mark(&self) -> u64 {
        self.state().next_seq
    }

    /// A renewal sent at `mark` committed and read `epoch`: forgets the releases before
    /// the mark that it proves durable, and returns those to make again (forgotten too:
    /// recorded anew once made again), with the epoch number to send them under.
    /// Enables asynchronous releases when an epoch was read, disables them otherwise.
    pub(crate) fn settle(&self, mark: u64, epoch: Option<String>) -> (Vec<Release>, Option<u64>) {
        self.enabled.store(epoch.is_some(), Ordering::Relaxed);
        let mut state = self.state();
        let number = match (epoch, state.epoch.take()) {
            (Some(now), Some((last, number))) if now == last => Some((now, number)),
            (Some(now), _) => {
                state.epochs += 1;
                Some((now, state.epochs))
            }
            (None, _) => None,
        };
        let current = number.as_ref().map(|(_, number)| *number);
        state.epoch = number;
        let before_mark = state.pending.iter().take_while(|p| p.seq < mark).count();
        let again = state
            .pending
            .drain(..before_mark)
            .filter(|pending| current.is_none() || pending.epoch != current)
            .map(|pending| pending.release)
            .collect();
        (again, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(entry: i64) -> Release {
        Release {
            name_id: 1,
            session: 7,
            entry,
            tombstone: false,
        }
    }

    #[test]
    fn a_renewal_at_the_same_epoch_proves_earlier_releases_durable() {
        let unflushed = Unflushed::default();
        let (again, epoch) = unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert!(again.is_empty());
        assert!(unflushed.enabled());
        unflushed.record(epoch, release(1));
        let mark = unflushed.mark();
        unflushed.record(epoch, release(2)); // after the renewal was sent
        let (again, _) = unflushed.settle(mark, Some("0/10/1".into()));
        assert!(again.is_empty(), "entry 1 is durable: {again:?}");
        // Entry 2 was recorded after the mark: still pending, and made again once the
        // epoch moves.
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/20/1".into()));
        assert_eq!(again, vec![release(2)]);
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/20/1".into()));
        assert!(again.is_empty(), "made again once only");
    }

    #[test]
    fn a_release_sent_before_an_epoch_moved_is_made_again() {
        let unflushed = Unflushed::default();
        // Nothing known yet: made again at the first renewal.
        unflushed.record(unflushed.epoch(), release(1));
        let (again, epoch) = unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert_eq!(again, vec![release(1)]);
        // Sent under epoch "0/10/1"; the server crashed and a renewal in flight read
        // the new epoch before the release was recorded: the next renewal, at that new
        // epoch, must not take it as durable.
        let sent_under = unflushed.epoch();
        assert_eq!(sent_under, epoch);
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/30/1".into()));
        assert!(again.is_empty());
        unflushed.record(sent_under, release(2));
        let (again, _) = unflushed.settle(unflushed.mark(), Some("0/30/1".into()));
        assert_eq!(again, vec![release(2)]);
    }

    #[test]
    fn without_an_epoch_releases_are_synchronous() {
        let unflushed = Unflushed::default();
        assert!(!unflushed.enabled(), "synchronous until an epoch is read");
        unflushed.settle(unflushed.mark(), Some("0/10/1".into()));
        assert!(unflushed.enabled());
        let (again, _) = unflushed.settle(unflushed.mark(), None);
        assert!(again.is_empty());
        assert!(!unflushed.enabled());
    }
}
