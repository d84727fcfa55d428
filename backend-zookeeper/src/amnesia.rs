//! When the store forgets: telling that the ZooKeeper answering is not the one the
//! client's sessions were opened on, the lock-delay before any grant after it, and
//! fencing tokens that keep growing.
//!
//! What forgets (a wiped data directory, not a restart), what a holder and a newcomer
//! see then, and what `max_session_ttl=` buys are in docs/ZOOKEEPER.md, "When
//! ZooKeeper forgets: a wiped data directory".
//!
//! **What tells it.** The client keeps the highest zxid it has seen. A node it creates
//! gets the zxid of its create as `czxid`, which on the same store is above every zxid
//! any reply carried before the create was sent: a `czxid` below the highest one seen
//! before the request means the store forgot. A store that forgot with no create in
//! flight shows nothing that way, so the client also keeps the id of the store's
//! **epoch marker**, the persistent node `<root>/amnesia` holding a random id, the
//! longest session TTL in use and the token offset (below), as
//! [`distsync_core::raw::EpochMarker`] encodes them. It reads the marker when it opens
//! a session, and again, on a connection of its own, when one of its sessions loses
//! its connection (retrying until the store answers again) or is lost without being
//! closed: a marker that is missing or carries another id means the store is not the
//! one the client knew.
//!
//! **On detection** every session of the client is closed (their ephemeral nodes are
//! gone with the store; `lost()` fires) and a warning names the reason. Then nothing
//! is granted through this client until the lock-delay has passed: every contender
//! node (joining a lock's, write lock's, election's or semaphore's line) waits before
//! it is created until the longest session TTL that could have existed has passed
//! since the detection (the marker's, the client's own longest, and the configured
//! bound). A holder's client-side deadline falls within its TTL, so every old holder's
//! `lost()` comes before anyone is granted again.
//!
//! **Clients that never knew the old store** cannot tell a wiped store from a new one:
//! for them a missing marker is the only sign. With a bound on session TTLs
//! ([`crate::ZkConfig::max_session_ttl`]) the client
//! that finds the marker missing writes the hold node `<root>/amnesia-hold` and then
//! the marker: the hold node is an ephemeral node of a session of the bound's length
//! that the client leaves open (detached) as it goes, so the node lives for the bound
//! whatever becomes of the client; every client that opens its first session while the
//! hold node lives (or writes it) waits out the bound before its first grant. The hold
//! node comes first so that no client finds the new marker without it. A session longer
//! than the bound is refused ([`distsync_core::Error::InvalidArgument`]), so the bound
//! covers every session. A client without the bound leaves a missing marker
//! alone (unless it saw the store forget, then it writes the marker and the hold node
//! for its own lock-delay): it cannot tell a new store from one that forgot, and grants
//! without a wait, free to be granted before an old holder's `lost()`.
//!
//! **Fencing tokens** are `czxid`s, which start again from the bottom on a store that
//! forgot. The client reports every `czxid` as the store's plus an offset: the
//! marker's. A client that writes a fresh marker seeds it from its clock in
//! microseconds ([`distsync_core::raw::EpochBook`]; how long that seed stays above the
//! old ensemble's `czxid`s is in docs/ZOOKEEPER.md). A client that detects
//! that the store forgot raises the offset to the highest token it reported, and
//! writes it into the marker. Every client adopts the marker's offset when it reads
//! the marker, and a client reads it again at the end of every lock-delay: an old
//! holder alive across the forgetting detects it as soon as the store answers again
//! (its session's connection is lost, and its own connection reads the marker), within
//! a newcomer's delay, which counts from then, so tokens handed out after the delay
//! are above every token it saw. A token handed out by the old store to a client that
//! is gone by then is known only through the clock's seed.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::raw::{EpochBook, EpochMarker};

use crate::BACKEND;

/// The marker node's name under the root (no primitive's kind: those are `lock`,
/// `queue`, ...).
/// Export, status and purges walk the kinds' nodes only, so they never meet it.
const MARKER: &str = "amnesia";
/// The hold node's name under the root: while it lives, first grants wait.
const HOLD: &str = "amnesia-hold";
/// How many times a marker write that raced another client's is tried again.
pub(crate) const WRITE_ATTEMPTS: usize = 5;
/// How long the marker read after a lost connection or session is tried again while
/// the store does not answer (a wiped server being started again): the old holder's
/// offset must reach the marker before a newcomer's lock-delay ends, which counts from
/// when the store answers again.
pub(crate) const RECHECK_FOR: Duration = Duration::from_secs(300);

/// What the client knew when it sent a create, to judge its `czxid` by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    zxid: i64,
    epoch: u64,
}

#[derive(Debug)]
struct State {
    /// The marker, the lock-delay and the token offset, as every store that can
    /// forget keeps them.
    book: EpochBook,
    /// The highest store zxid seen in this epoch.
    zxid: i64,
    /// Whether a marker read after a lost session is under way.
    checking: bool,
}

/// The detection state of one backend (shared by its sessions).
#[derive(Debug)]
pub(crate) struct Amnesia {
    pub(crate) marker_path: String,
    pub(crate) hold_path: String,
    state: Mutex<State>,
}

impl Amnesia {
    /// Detection for the root `root`, with `bound` the configured bound on session TTLs.
    pub(crate) fn new(root: &str, bound: Option<Duration>) -> Self {
        Self {
            marker_path: format!("{root}/{MARKER}"),
            hold_path: format!("{root}/{HOLD}"),
            state: Mutex::new(State {
                book: EpochBook::new(bound),
                zxid: 0,
                checking: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Runs `use_book` on the epoch book (the markers, session TTLs and lock-delay
    /// this client knows, see [`EpochBook`]) under the state's lock.
    pub(crate) fn book<T>(&self, use_book: impl FnOnce(&mut EpochBook) -> T) -> T {
        use_book(&mut self.state().book)
    }

    /// Taken before a create is sent.
    pub(crate) fn ticket(&self) -> Ticket {
        let state = self.state();
        Ticket {
            zxid: state.zxid,
            epoch: state.book.epoch(),
        }
    }

    /// Records a zxid a reply carried (a stat's, at most the store's zxid then).
    pub(crate) fn seen(&self, zxid: i64) {
        let mut state = self.state();
        state.zxid = state.zxid.max(zxid);
    }

    /// Judges the `czxid` of a node created after `ticket` was taken; `true` when it
    /// shows the store forgot.
    pub(crate) fn observe_created(&self, ticket: Ticket, czxid: i64) -> bool {
        let mut state = self.state();
        if ticket.epoch == state.book.epoch() && czxid > 0 && czxid <= ticket.zxid {
            let reason = format!(
                "a node created after zxid {:#x} was seen got zxid {czxid:#x} (a wiped \
                 server or a new ensemble at the same address)",
                ticket.zxid
            );
            state.zxid = czxid;
            state.book.forgot(BACKEND, &reason);
            return true;
        }
        state.zxid = state.zxid.max(czxid);
        false
    }

    /// The marker as read (`None`: missing); `true` when it shows the store forgot.
    pub(crate) fn observe_marker(&self, marker: Option<&EpochMarker>) -> bool {
        let mut state = self.state();
        let gone = "a wiped server or a new ensemble at the same address";
        match state.book.observe_marker(marker, gone) {
            Some(reason) => {
                // Zxids start again on the new store.
                state.zxid = 0;
                state.book.forgot(BACKEND, &reason);
                true
            }
            None => false,
        }
    }

    /// Starts a lock-delay of the longest TTL known, from now.
    pub(crate) fn hold_for_longest(&self) {
        let book = &mut self.state().book;
        book.hold_for(book.delay());
    }

    /// Starts the marker read after a lost connection or session, unless one is under
    /// way or the marker was never read (`false`: nothing to do).
    pub(crate) fn start_recheck(&self) -> bool {
        let mut state = self.state();
        if !state.book.marker_checked() || state.checking {
            return false;
        }
        state.checking = true;
        true
    }

    /// The marker read after a lost connection or session is over.
    pub(crate) fn end_recheck(&self) {
        self.state().checking = false;
    }

    /// A `czxid` as reported up as a token (0 and below kept).
    pub(crate) fn up(&self, czxid: i64) -> i64 {
        let mut state = self.state();
        state.zxid = state.zxid.max(czxid);
        state.book.up(czxid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_core::Error;

    #[test]
    fn a_create_below_a_zxid_seen_is_a_store_that_forgot() {
        let amnesia = Amnesia::new("/ns", Some(Duration::from_secs(5)));
        let ticket = amnesia.ticket();
        assert!(!amnesia.observe_created(ticket, 100));
        assert_eq!(amnesia.up(100), 100);
        // Replies to concurrent creates may arrive out of order: not a rollback.
        assert!(!amnesia.observe_created(ticket, 90));
        assert!(amnesia.book(|book| book.hold()).is_none());
        assert!(amnesia.observe_created(amnesia.ticket(), 3));
        assert!(amnesia.book(|book| book.hold()).is_some());
        // Tokens keep growing: the store's zxid 4 reports above 100.
        assert!(amnesia.up(4) > 100);
    }

    #[test]
    fn a_marker_gone_or_changed_is_a_store_that_forgot() {
        let amnesia = Amnesia::new("/ns", None);
        assert!(!amnesia.observe_marker(None));
        amnesia.book(|book| book.record_ttl(Duration::from_secs(5)));
        let marker = EpochMarker::fresh(Duration::from_secs(5), 7);
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert_eq!(amnesia.up(1), 8, "the marker's offset is adopted");
        assert!(amnesia.observe_marker(None));
        assert!(amnesia.book(|book| book.detected()));
        assert!(!amnesia.observe_marker(Some(&EpochMarker::fresh(Duration::ZERO, 0))));
        let other = EpochMarker::fresh(Duration::ZERO, 0);
        assert!(amnesia.observe_marker(Some(&other)));
    }

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let amnesia = Amnesia::new("", Some(Duration::from_secs(5)));
        assert!(amnesia
            .book(|book| book.check_ttl(Duration::from_secs(5)))
            .is_ok());
        assert!(matches!(
            amnesia.book(|book| book.check_ttl(Duration::from_secs(6))),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(amnesia.marker_path, "/amnesia");
    }
}
