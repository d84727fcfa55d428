//! The contender keys a session released cleanly, kept for its next entry into the
//! same line.
//!
//! A release purges its key, and the purge's tombstone stays in the bucket for
//! [`TOMBSTONE_TTL`]; a listing of a line reads every key's last message, tombstones
//! included. Were every acquisition to make a key of its own, a busy lock's listing
//! would read one tombstone per acquisition of the last [`TOMBSTONE_TTL`], and each
//! acquisition would cost more the more acquisitions came before it. A session that
//! enters a line again therefore writes the key it released there last: a create
//! compared with the tombstone's sequence, which replaces the tombstone (the bucket
//! keeps one message per key). A line then lists at most one key per contender of
//! its last [`TOMBSTONE_TTL`], whatever the number of acquisitions.
//!
//! A key is held by one contender at a time: it is taken out of here when a
//! contender enters with it, and put back only by a release whose purge this
//! session wrote (so the tombstone's sequence is known). A key whose release failed
//! or found the key already ended is never reused: its session makes a fresh one.
//! Only a tombstone younger than [`REUSE_WITHIN`] is reused, as an older one may be
//! gone by its TTL (a create compared with it would be refused).
//!
//! # A line left empty
//!
//! A lock's holder that nobody joined releases its key with a purge compared with the
//! whole line (`Nats-Expected-Last-Subject-Sequence-Subject` on `<line>.>`): it lands
//! only while the holder's own create is still the line's last message, so no key
//! entered, was renewed, or ended in the line while it held, and the line it leaves
//! holds no live key. Its tombstone is recorded as **quiet**. The session's next entry
//! into that line is compared with the whole line in the same way, on the quiet
//! tombstone: it lands only while nothing was written to the line since that purge,
//! so the line holds no other live key, and the entry heads the line without listing
//! it (see `src/lock.rs`). A refused compare costs that entry the ordinary one. Only
//! a server outside a JetStream cluster checks such a compare in one step with the
//! write ([`crate::store::Store::compares_lines`]); a cluster's releases record no
//! quiet tombstone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use distsync_core::raw::locked;
use tokio::time::Instant;

use crate::session::TOMBSTONE_TTL;

/// How long after its release a key is entered again: a second less than its
/// tombstone stays, so that the compared create finds the tombstone in place.
pub(crate) const REUSE_WITHIN: Duration = TOMBSTONE_TTL.saturating_sub(Duration::from_secs(1));

/// A key released by the session's own purge.
struct Released {
    tombstone: Tombstone,
    at: Instant,
}

/// A released key, as its session's next entry into the line writes it again.
pub(crate) struct Tombstone {
    /// The key.
    pub(crate) key: String,
    /// The sequence of the purge's tombstone: what the next create compares with.
    pub(crate) seq: u64,
    /// Whether the purge left the line without a live key (see the module docs).
    pub(crate) quiet: bool,
}

/// The keys of one session released lately, by line (see the module docs).
#[derive(Default)]
pub(crate) struct ReleasedKeys {
    lines: Mutex<Lines>,
}

/// The released keys by line, and how many lines a record may find before it prunes
/// the stale ones (twice as many as the last pruning left, so that pruning costs a
/// constant per record on average).
#[derive(Default)]
struct Lines {
    by_line: HashMap<String, Vec<Released>>,
    prune_at: usize,
}

impl ReleasedKeys {
    /// A key of `line` released less than [`REUSE_WITHIN`] ago, taken out of the set;
    /// `None` when there is none.
    pub(crate) fn take(&self, line: &str) -> Option<Tombstone> {
        let mut lines = locked(&self.lines);
        let by_line = &mut lines.by_line;
        let released = by_line.get_mut(line)?;
        let now = Instant::now();
        released.retain(|key| now.duration_since(key.at) < REUSE_WITHIN);
        let taken = released.pop();
        if released.is_empty() {
            by_line.remove(line);
        }
        taken.map(|released| released.tombstone)
    }

    /// Records a key of `line` released by a purge, as `tombstone` says. Lines whose
    /// keys are all too old to reuse are forgotten, so that the set holds only the
    /// lines of the last [`REUSE_WITHIN`].
    pub(crate) fn record(&self, line: &str, tombstone: Tombstone) {
        let mut lines = locked(&self.lines);
        let now = Instant::now();
        if lines.by_line.len() >= lines.prune_at.max(PRUNE_ABOVE) {
            lines.by_line.retain(|_, released| {
                released.retain(|key| now.duration_since(key.at) < REUSE_WITHIN);
                !released.is_empty()
            });
            lines.prune_at = 2 * lines.by_line.len();
        }
        lines
            .by_line
            .entry(line.to_owned())
            .or_default()
            .push(Released { tombstone, at: now });
    }
}

/// The fewest lines the set holds before a record prunes the stale ones.
const PRUNE_ABOVE: usize = 64;
