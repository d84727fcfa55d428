//! The lock keys this process knows to have headed their line, so that a waiter woken
//! by its predecessor's deletion can take its turn without reading the whole line.
//!
//! etcd serves a range sorted by create revision (or filtered by one) by reading every
//! key of the range and sorting them: a waiter's look at the line costs in proportion
//! to the line. Go's `waitDeletes` looks after every deletion of its predecessor. Yet
//! once a key has headed its line (it held the lock), no older key can come back
//! (create revisions only grow), and the waiter's first read showed that nothing lies
//! between its predecessor and itself. So when a predecessor that headed the line is
//! deleted, the waiter heads it, provided that its own key is still there: one read of
//! that key, whatever the line's length. A predecessor this process did not see hold
//! (another process's, a waiter that left) still takes the full read.
//!
//! A key heads the line of the prefix it was granted under: a lock `a/b`'s key also lies
//! in lock `a`'s range (`a/`), where older keys may wait or hold, so what a key headed is
//! known per prefix.
//!
//! The knowledge lives only while needed: a key is remembered while its hold is held
//! ([`Heads::granted`]'s mark) or while a waiter of this process watches it
//! ([`Heads::watch`]'s interest), and forgotten when neither is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use distsync_core::raw::locked;

use crate::kv::Revision;

/// One key at one create revision, in the line of one prefix.
type Id = (String, String, Revision);

/// What is known of one key.
#[derive(Default)]
struct Known {
    /// It headed its line (was granted) at some point.
    headed: bool,
    /// Its hold's mark is alive (granted, not yet released or dropped).
    held: bool,
    /// Waiters of this process watching it.
    watchers: usize,
}

/// The keys of this process's backend known to have headed their line (see the module
/// docs). Shared by every lock of one [`KvBackend`](super::KvBackend).
#[derive(Default)]
pub(crate) struct Heads {
    known: Mutex<HashMap<Id, Known>>,
}

impl std::fmt::Debug for Heads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heads")
            .field("known", &self.lock().len())
            .finish()
    }
}

impl Heads {
    fn lock(&self) -> MutexGuard<'_, HashMap<Id, Known>> {
        // The map stays consistent through a panic elsewhere: every update is one step.
        locked(&self.known)
    }

    /// `key`, created at `create_revision`, heads the line of the keys under `prefix`
    /// (its hold is granted). The mark keeps that known until it is dropped (with the
    /// hold's release step), and after that for as long as a waiter watches the key.
    pub(crate) fn granted(
        self: &Arc<Self>,
        prefix: &str,
        key: &str,
        create_revision: Revision,
    ) -> HeadMark {
        let id = (prefix.to_owned(), key.to_owned(), create_revision);
        let mut known = self.lock();
        let entry = known.entry(id.clone()).or_default();
        entry.headed = true;
        entry.held = true;
        HeadMark {
            heads: Arc::clone(self),
            id,
        }
    }

    /// A waiter of this process in the line of the keys under `prefix` starts watching
    /// `key`, created at `create_revision`, its predecessor: the interest keeps what
    /// becomes known of the key in that line until dropped.
    pub(crate) fn watch(
        self: &Arc<Self>,
        prefix: &str,
        key: &str,
        create_revision: Revision,
    ) -> Interest {
        let id = (prefix.to_owned(), key.to_owned(), create_revision);
        self.lock().entry(id.clone()).or_default().watchers += 1;
        Interest {
            heads: Arc::clone(self),
            id,
        }
    }

    /// Forgets `id` when nothing keeps it any longer.
    fn settle(known: &mut HashMap<Id, Known>, id: &Id) {
        if known
            .get(id)
            .is_some_and(|entry| !entry.held && entry.watchers == 0)
        {
            known.remove(id);
        }
    }

    /// How many keys are remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A granted hold's mark in [`Heads`]; dropping it (the hold released, or its guard
/// dropped) lets the key be forgotten once no waiter watches it.
pub(crate) struct HeadMark {
    heads: Arc<Heads>,
    id: Id,
}

impl Drop for HeadMark {
    fn drop(&mut self) {
        let mut known = self.heads.lock();
        if let Some(entry) = known.get_mut(&self.id) {
            entry.held = false;
        }
        Heads::settle(&mut known, &self.id);
    }
}

/// A waiter's interest in its predecessor (see [`Heads::watch`]).
pub(crate) struct Interest {
    heads: Arc<Heads>,
    id: Id,
}

impl Interest {
    /// Whether the watched key is known to have headed the waiter's line.
    pub(crate) fn headed(&self) -> bool {
        self.heads
            .lock()
            .get(&self.id)
            .is_some_and(|entry| entry.headed)
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut known = self.heads.lock();
        if let Some(entry) = known.get_mut(&self.id) {
            entry.watchers = entry.watchers.saturating_sub(1);
        }
        Heads::settle(&mut known, &self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_released_before_its_successor_looks_is_still_known() {
        let heads = Arc::new(Heads::default());
        let interest = heads.watch("l/", "l/a", 5);
        assert!(!interest.headed(), "a waiter is not a head");
        let mark = heads.granted("l/", "l/a", 5);
        drop(mark);
        assert!(interest.headed(), "forgotten while a successor watched it");
        drop(interest);
        assert_eq!(heads.len(), 0, "kept after nothing needed it");
    }

    #[test]
    fn keys_are_told_apart_by_create_revision_and_line_and_forgotten_when_released() {
        let heads = Arc::new(Heads::default());
        let mark = heads.granted("l/", "l/a", 5);
        let later = heads.watch("l/", "l/a", 9);
        assert!(!later.headed(), "the key created again is another hold");
        assert!(heads.watch("l/", "l/a", 5).headed());
        assert!(
            !heads.watch("", "l/a", 5).headed(),
            "heading the line of `l/` says nothing of the wider line of ``"
        );
        drop((mark, later));
        assert_eq!(heads.len(), 0);
    }
}
