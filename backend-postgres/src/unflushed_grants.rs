//! Unflushed grants (`grants=unflushed`): grants that commit without waiting for the
//! WAL flush, and what keeps holds exclusive when a crash loses them.
//!
//! By default every grant (an entry given its fencing token, the counter bumped, a
//! candidacy's leader row) commits synchronously: its commit returns, and its
//! notification is delivered, only once the WAL is flushed, the main cost of a lock
//! cycle on a durable server. In this mode the pools' connections carry the setting
//! `distsync.unflushed_grants` (the bound on session TTLs, in milliseconds,
//! [`crate::connection::pool_setup`]), and every grant path (`semaphore_join`'s
//! immediate grant, `semaphore_check`, `sem_grant` for the grants of a release,
//! `unfair_acquire`, and elections through them) passes `grant_gate`
//! (`sql/unflushed_grants.sql`) and commits with `synchronous_commit = off`. Sessions,
//! renewals, guarded writes and everything else commit as before.
//!
//! **What a crash loses.** An acknowledged grant whose commit was not flushed is gone
//! after a crash of the server (or a promotion of a standby that did not have it): its
//! entry, and the counter bump with it, while its session (committed synchronously)
//! lives on. Its holder would hold nothing, and the next waiter would be granted at once,
//! with the same token. So:
//! - **The crash is told.** The one row of the *unlogged* table `grant_sentinel`, with a
//!   random id, is emptied by PostgreSQL at crash recovery and on a promoted standby (and
//!   kept across a clean shutdown, which flushes everything). The gate finds it missing
//!   before any grant after the crash, and so does the heartbeat, which reads it in the
//!   statement that renews the sessions.
//! - **Nothing is granted for the bound.** The gate that finds the row missing moves the
//!   epoch marker's `hold_until` (see [`crate::amnesia`]) to the bound from now (or the
//!   marker's longer TTL) and writes a new row, in a synchronous commit, and grants
//!   nothing; every grant in the mode, by any client, waits while `hold_until` lies ahead
//!   (`o_state` 6, "ask again in this long": a join leaves nothing behind, a waiting
//!   entry keeps its place, a release wakes the waiters it would have let in to ask).
//!   The bound covers every session's TTL, so every holder of a lost grant has seen the
//!   crash at its next renewal, or reached its client-side deadline, before then.
//! - **The holder learns it.** A client granted anything since it read the sentinel's id
//!   treats a reading that differs ([`Sentinel::seen`]) as the store forgetting its holds
//!   (`crate::epoch::grants_may_be_lost`): every session of the client is lost (`lost()`
//!   fires, with a warning naming the reason) before the renewal is acknowledged, its
//!   own grants wait the lock-delay, and it raises the token floor to the highest token
//!   it handed out, as after any forgetting ([`crate::amnesia`]), so tokens after the
//!   lock-delay are above every token a live holder saw.
//!
//! What the mode gives up is in the crate docs ([`crate`], "Unflushed grants"): every
//! client of a schema must use it, with the same bound, as a durable client does not
//! pass the gate and could be granted during the lock-delay.
//!
//! **The sentinel as this client knows it** is [`Sentinel`]: the id it last read, and
//! whether it was granted anything since; a grant asked for before a move and answered
//! after it counts as made before it (a wait across a crash costs its client's
//! sessions). A client whose heartbeat has not yet read the
//! id written after a crash may count a grant made after the crash as made before it:
//! its sessions are then lost once more, the safe side.

use std::sync::{Mutex, MutexGuard, OnceLock};

use distsync_core::raw::locked;

/// What to do when grants may be lost (the sentinel moved, or a standby that did not
/// wait for every commit was promoted): called with the reason, and whether this client
/// was granted anything the server may have lost.
pub(crate) type OnMoved = Box<dyn Fn(String, bool) + Send + Sync>;

#[derive(Default)]
struct State {
    /// The id last read (`None`: not read yet, or read missing).
    known: Option<String>,
    /// A grant was made through this client since `known` was read.
    granted: bool,
    /// How many moves this client has seen: a grant asked for before a move and
    /// answered after it may have been made under the old id.
    moves: u64,
}

/// The sentinel of one backend (see the module docs).
pub(crate) struct Sentinel {
    /// Whether the backend grants without a flush (otherwise nothing here is used).
    enabled: bool,
    state: Mutex<State>,
    on_moved: OnceLock<OnMoved>,
}

impl Sentinel {
    /// The sentinel of a backend with (`enabled`) or without unflushed grants.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::new(State::default()),
            on_moved: OnceLock::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Whether the backend grants without a flush.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets what to do when grants may be lost (once; later calls are ignored).
    pub(crate) fn on_moved(&self, on_moved: OnMoved) {
        let _ = self.on_moved.set(on_moved);
    }

    /// The id read or written by this client (at connect, or after a move): grants
    /// from now on are made under it. An acquisition counted since the move stays
    /// counted: it may be granted under this id.
    pub(crate) fn adopt(&self, id: String) {
        self.state().known = Some(id);
    }

    /// Before an acquisition sends anything that may grant: the mark to give
    /// [`Sentinel::granted`] once it is granted.
    pub(crate) fn asking(&self) -> u64 {
        if !self.enabled {
            return 0;
        }
        self.state().moves
    }

    /// An acquisition that began at `asked` ([`Sentinel::asking`]) was granted. If the
    /// sentinel moved meanwhile, the grant may have been made under the old id and
    /// lost with it (its answer may have come just before the crash, and been read
    /// after the move): that is a move with a grant, at once (the safe side: a wait
    /// across a crash costs its client's sessions).
    pub(crate) fn granted(&self, asked: u64) {
        if !self.enabled {
            return;
        }
        {
            let mut state = self.state();
            if state.moves == asked {
                state.granted = true;
                return;
            }
        }
        self.moved(
            "a grant asked for before the server's crash sentinel moved was answered \
             after it (the server recovered from a crash, or a standby was promoted): \
             it may be lost"
                .to_owned(),
            true,
        );
    }

    /// A standby was promoted that may lack commits acknowledged before (see
    /// [`crate::connection::promotion`]): without unflushed grants, [`Sentinel::on_moved`]'s
    /// function is called as for a move with a grant (any grant or release of this
    /// client may be lost). Under unflushed grants nothing is done here: the sentinel,
    /// which a promoted standby finds empty, tells the promotion itself.
    pub(crate) fn promoted(&self, reason: String) {
        if self.enabled {
            return;
        }
        self.moved(reason, true);
    }

    /// Calls [`Sentinel::on_moved`]'s function, if one is set.
    fn moved(&self, reason: String, granted: bool) {
        if let Some(on_moved) = self.on_moved.get() {
            on_moved(reason, granted);
        }
    }

    /// A reading of the sentinel by the heartbeat (`None`: the row is missing): when it
    /// differs from the id known, the sentinel moved, and [`Sentinel::on_moved`]'s
    /// function is called with the reason and whether this client was granted anything
    /// since it knew the old id. Returns the reason.
    pub(crate) fn seen(&self, read: Option<String>) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let (reason, granted) = {
            let mut state = self.state();
            if state.known == read {
                return None;
            }
            let reason = match (&state.known, &read) {
                (Some(known), Some(now)) => format!(
                    "the server's crash sentinel changed from {known} to {now} (the server \
                     recovered from a crash, or a standby was promoted): grants committed \
                     without a flush may be lost"
                ),
                (Some(known), None) => format!(
                    "the server's crash sentinel {known} is gone (the server recovered from \
                     a crash, or a standby was promoted): grants committed without a flush \
                     may be lost"
                ),
                // Found gone and not yet written again: granted nothing since, the
                // id read is the one grants are made under from now on.
                (None, Some(now)) if !state.granted => {
                    state.known = Some(now.clone());
                    return None;
                }
                // Granted meanwhile: under an id this client never read, which this
                // one may have replaced (the safe side: taken as a move). Grants asked
                // for after the move are granted after the server came back.
                (None, _) => "the server's crash sentinel was unknown to this client when \
                              it was granted (it was found gone before): grants committed \
                              without a flush may be lost"
                    .to_owned(),
            };
            let granted = std::mem::take(&mut state.granted);
            state.known = read;
            state.moves += 1;
            (reason, granted)
        };
        self.moved(reason.clone(), granted);
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn counted(sentinel: &Sentinel) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (moved, with_grants) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (m, g) = (Arc::clone(&moved), Arc::clone(&with_grants));
        sentinel.on_moved(Box::new(move |_, granted| {
            m.fetch_add(1, Ordering::SeqCst);
            if granted {
                g.fetch_add(1, Ordering::SeqCst);
            }
        }));
        (moved, with_grants)
    }

    #[test]
    fn another_id_or_none_is_a_move_with_the_grants_made_since() {
        let sentinel = Sentinel::new(true);
        let (moved, with_grants) = counted(&sentinel);
        sentinel.adopt("a".into());
        assert_eq!(sentinel.seen(Some("a".into())), None);
        sentinel.granted(sentinel.asking());
        assert!(sentinel.seen(None).is_some(), "the row is gone");
        assert_eq!(
            (
                moved.load(Ordering::SeqCst),
                with_grants.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // Found gone: the next id read is adopted, not a second move.
        assert_eq!(sentinel.seen(None), None);
        assert_eq!(sentinel.seen(Some("b".into())), None);
        assert!(sentinel.seen(Some("c".into())).is_some(), "another id");
        assert_eq!(
            (
                moved.load(Ordering::SeqCst),
                with_grants.load(Ordering::SeqCst)
            ),
            (2, 1),
            "nothing granted since b"
        );
        // Gone again, then granted before an id was read: whatever is read next is a
        // move.
        assert!(sentinel.seen(None).is_some());
        sentinel.granted(sentinel.asking());
        assert!(sentinel.seen(Some("d".into())).is_some());
        assert_eq!(with_grants.load(Ordering::SeqCst), 2);
        // Asked for before a move, granted after it: a move with a grant, at once.
        let asked = sentinel.asking();
        assert!(sentinel.seen(Some("e".into())).is_some());
        sentinel.granted(asked);
        assert_eq!(
            (
                moved.load(Ordering::SeqCst),
                with_grants.load(Ordering::SeqCst)
            ),
            (6, 3)
        );
    }

    #[test]
    fn without_the_mode_nothing_moves() {
        let sentinel = Sentinel::new(false);
        let (moved, _) = counted(&sentinel);
        sentinel.adopt("a".into());
        sentinel.granted(sentinel.asking());
        assert_eq!(sentinel.seen(None), None);
        assert_eq!(moved.load(Ordering::SeqCst), 0);
    }
}
