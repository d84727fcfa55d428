//! When the store forgets: telling that the etcd answering is not the one the
//! client's sessions were granted on, the lock-delay before any grant after it, and
//! fencing tokens that keep growing.
//!
//! etcd keeps its state on disk, so a restart forgets nothing. What does forget is an
//! operator's act: a member whose data directory was wiped and that was started again
//! at the same address, a new cluster put behind the same endpoints, a snapshot
//! restored. The client's leases are then gone with every key they held, and a new
//! client can be granted a lock at once while its former holder still acts on it until
//! its next renewal (a third of its TTL later) finds its lease gone.
//!
//! **What tells it, with no extra round trip.** Every etcd answer carries a header
//! with the cluster id and the store's revision. The client remembers the cluster id
//! and the highest revision it has seen; another cluster id, or a revision below the
//! highest one seen before the request was sent (a linearizable answer never goes
//! back), means the store forgot. A wiped member started with the same flags derives
//! the same cluster id and restarts the revision at 1, which only tells once the
//! client sends a request before the new store's revision has caught up; so the
//! client also keeps the id of the store's **epoch marker**, a key
//! `<namespace>/amnesia` holding a random id, the longest session TTL in use and the
//! token offset (below). It reads the marker when it opens its first session (and
//! when a session's TTL is longer than the marker's), and again when a renewal finds
//! its lease gone: a marker that is missing or carries another id means the store is
//! not the one the client knew.
//!
//! **On detection** the client's sessions are lost (their leases are gone with the
//! store; their next renewal answers at once that they are, so `lost()` fires) and a
//! warning names the reason. Then nothing is granted through this client until the
//! lock-delay has passed: every put bound to a lease (joining a lock's, write lock's,
//! election's or semaphore's line) waits until the longest session TTL that could
//! have existed has passed since the detection (the marker's, the client's own
//! longest, and the configured bound). A holder's client-side deadline falls within
//! its TTL, so every old holder's `lost()` comes before anyone is granted again.
//!
//! **Clients that never knew the old store** cannot tell a wiped store from a new
//! one: for them a missing marker is the only sign. With a bound on session TTLs
//! (`max_session_ttl=` in the URL, [`crate::EtcdConfig::max_session_ttl`]) the client
//! that finds the marker missing writes it together with a hold key
//! (`<namespace>/amnesia-hold`) bound to a lease of the bound's length, and every
//! client that opens a session while the hold key lives (or writes it) waits out the
//! bound before its first grant. A session longer than the bound is refused
//! ([`distsync_core::Error::InvalidArgument`]), so the bound covers every session.
//! The price: a namespace's first session on a store waits the bound once before its
//! first grant. A client without the bound leaves a missing marker alone (unless it
//! saw the store forget, then it writes the marker and the hold key for its own
//! lock-delay): it cannot tell a new store from one that forgot, and grants without
//! a wait, free to be granted before an old holder's `lost()`. Only the bound makes
//! the backend declare `exclusive_across_restart`, and every client of a namespace
//! must give it (the same one, or a larger one).
//!
//! **Fencing tokens** are create revisions, which start again at 1 on a store that
//! forgot. The client reports every revision it reads as the store's plus an offset,
//! and sends every revision it writes less it, so the recipes above see one revision
//! sequence. The offset is 0 until a client detects that the store forgot; it then
//! becomes the highest revision that client reported, and is written into the marker.
//! Every client adopts the marker's offset when it reads the marker, and a client
//! reads it again at the end of every lock-delay: an old holder alive across the
//! forgetting detects it within a third of its TTL (its renewal), within the delay,
//! so tokens handed out after the delay are above every token it saw. A token handed
//! out by the old store to a client that is gone by then is not known to anyone: the
//! offset covers the tokens of clients alive across the forgetting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use distsync_core::Result;
use distsync_kv::kv::{LeaseId, Revision};
use tokio::time::Instant;

use crate::error::BACKEND;

/// The marker key under a namespace (a "kind" no primitive uses; lock and election
/// keys cannot start with `<namespace>/`).
pub(crate) fn marker_key(namespace: &str) -> String {
    format!("{namespace}/amnesia")
}

/// The hold key under a namespace: while it lives, grants wait (see the module docs).
pub(crate) fn hold_key(namespace: &str) -> String {
    format!("{namespace}/amnesia-hold")
}

use distsync_core::raw::EpochBook;
/// The content of the epoch marker (the one every backend with a marker writes).
pub(crate) use distsync_core::raw::EpochMarker as Marker;

/// What the client knew when it sent a request, to judge its answer by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    revision: Revision,
    epoch: u64,
}

#[derive(Debug)]
struct State {
    /// The marker, the lock-delay and the token offset, as every store that can
    /// forget keeps them.
    book: EpochBook,
    /// The cluster id of the answers (0: none seen yet).
    cluster_id: u64,
    /// The highest store revision seen in this epoch.
    revision: Revision,
    /// The epoch each lease of this client was granted in.
    leases: HashMap<LeaseId, u64>,
}

/// The detection state of one client (shared by its clones).
#[derive(Debug)]
pub(crate) struct Amnesia {
    namespace: Option<String>,
    state: Mutex<State>,
}

impl Amnesia {
    /// Detection for a client; `namespace` (when known) places the marker, `bound`
    /// is the configured bound on session TTLs.
    pub(crate) fn new(namespace: Option<String>, bound: Option<Duration>) -> Self {
        Self {
            namespace,
            state: Mutex::new(State {
                book: EpochBook::new(bound),
                cluster_id: 0,
                revision: 0,
                leases: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The namespace the marker lives under, when the client knows it.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The configured bound on session TTLs.
    pub(crate) fn bound(&self) -> Option<Duration> {
        self.state().book.bound()
    }

    /// Refuses a session TTL above the bound, which the lock-delay relies on.
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidArgument`] for a TTL above the bound.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        self.state().book.check_ttl(ttl)
    }

    /// Whether a session of `ttl` needs the marker read (the first session, or one
    /// longer than any recorded), when the client knows where it lives.
    pub(crate) fn needs_marker(&self, ttl: Duration) -> bool {
        self.namespace.is_some() && self.state().book.needs_marker(ttl)
    }

    /// Taken before a request is sent.
    pub(crate) fn ticket(&self) -> Ticket {
        let state = self.state();
        Ticket {
            revision: state.revision,
            epoch: state.book.epoch(),
        }
    }

    /// Judges an answer's header; `true` when it shows the store forgot.
    pub(crate) fn observe(&self, ticket: Ticket, cluster_id: u64, revision: Revision) -> bool {
        let mut state = self.state();
        let reason = if cluster_id != 0 && state.cluster_id != 0 && cluster_id != state.cluster_id {
            Some(format!(
                "the cluster id changed from {:x} to {cluster_id:x} (a new cluster at the same address)",
                state.cluster_id
            ))
        } else if ticket.epoch == state.book.epoch() && revision > 0 && revision < ticket.revision {
            Some(format!(
                "the store revision went back from {} to {revision} (a wiped member or a restored snapshot)",
                ticket.revision
            ))
        } else {
            None
        };
        if cluster_id != 0 {
            state.cluster_id = cluster_id;
        }
        match reason {
            Some(reason) => {
                state.revision = revision;
                forgot(&mut state, &reason);
                true
            }
            None => {
                state.revision = state.revision.max(revision);
                false
            }
        }
    }

    /// The marker as read (`None`: missing); `true` when it shows the store forgot.
    pub(crate) fn observe_marker(&self, marker: Option<&Marker>) -> bool {
        let mut state = self.state();
        let gone = "a wiped store or a recreated namespace";
        match state.book.observe_marker(marker, gone) {
            Some(reason) => {
                forgot(&mut state, &reason);
                true
            }
            None => false,
        }
    }

    /// Whether a hold key of `create_revision` (the store's) is one this client has
    /// not waited out yet (and records it).
    pub(crate) fn new_hold(&self, create_revision: Revision) -> bool {
        self.state().book.new_hold(create_revision)
    }

    /// Whether this client saw the store forget.
    pub(crate) fn detected(&self) -> bool {
        self.state().book.detected()
    }

    /// Starts a lock-delay of `delay`, from now (a missing marker, or the store's hold
    /// key, seen by a client with the bound).
    pub(crate) fn hold_for(&self, delay: Duration) {
        self.state().book.hold_for(delay);
    }

    /// The longest session TTL known (what a lock-delay waits).
    pub(crate) fn longest_ttl(&self) -> Duration {
        self.state().book.delay()
    }

    /// Records a session TTL this client uses.
    pub(crate) fn record_ttl(&self, ttl: Duration) {
        self.state().book.record_ttl(ttl);
    }

    /// The marker to write where there is none, or `None` with the one to keep.
    pub(crate) fn marker_to_write(
        &self,
        current: Option<&Marker>,
        ttl: Duration,
    ) -> Option<Marker> {
        self.state().book.marker_to_write(current, ttl)
    }

    /// Records the marker this client wrote.
    pub(crate) fn wrote_marker(&self, marker: &Marker) {
        self.state().book.wrote_marker(marker);
    }

    /// When the lock-delay ends, if one runs.
    pub(crate) fn hold(&self) -> Option<Instant> {
        self.state().book.hold()
    }

    /// Whether the marker must be read again after a lock-delay (cleared).
    pub(crate) fn take_reread(&self) -> bool {
        self.state().book.take_reread()
    }

    /// A lease granted, in the present epoch.
    pub(crate) fn lease_granted(&self, lease: LeaseId) {
        let mut state = self.state();
        let epoch = state.book.epoch();
        state.leases.insert(lease, epoch);
    }

    /// A lease revoked or found gone.
    pub(crate) fn lease_ended(&self, lease: LeaseId) {
        self.state().leases.remove(&lease);
    }

    /// Whether a lease was granted by a store that has since forgotten it.
    pub(crate) fn lease_forgotten(&self, lease: LeaseId) -> bool {
        let state = self.state();
        state
            .leases
            .get(&lease)
            .is_some_and(|epoch| *epoch < state.book.epoch())
    }

    /// A store revision as reported up (0 and below: no revision, kept).
    pub(crate) fn up(&self, revision: Revision) -> Revision {
        self.state().book.up(revision)
    }

    /// A reported revision as the store knows it (0 and below kept; one from before
    /// the offset, that the store never had, becomes 1).
    pub(crate) fn down(&self, revision: Revision) -> Revision {
        self.state().book.down(revision)
    }
}

/// The store forgot: the book's new epoch and lock-delay (it warns), and how many of
/// this client's sessions that ends.
fn forgot(state: &mut State, reason: &str) {
    state.book.forgot(BACKEND, reason);
    tracing::debug!(
        backend = BACKEND,
        sessions_lost = state.leases.len(),
        "etcd sessions lost with the store"
    );
}

#[cfg(test)]
mod tests {
    use distsync_core::Error;

    use super::*;

    #[test]
    fn a_revision_going_back_is_a_store_that_forgot() {
        let amnesia = Amnesia::new(Some("ns/".into()), Some(Duration::from_secs(5)));
        assert!(!amnesia.observe(amnesia.ticket(), 7, 100));
        assert_eq!(amnesia.up(100), 100);
        amnesia.lease_granted(1);
        // Answers to concurrent requests may arrive out of order: not a rollback.
        let early = Ticket {
            revision: 50,
            epoch: 0,
        };
        assert!(!amnesia.observe(early, 7, 90));
        assert!(amnesia.hold().is_none());
        assert!(amnesia.observe(amnesia.ticket(), 7, 3));
        assert!(amnesia.lease_forgotten(1));
        assert!(amnesia.hold().is_some());
        // Tokens keep growing: the store's revision 4 reports above 100.
        assert!(amnesia.up(4) > 100);
        assert_eq!(amnesia.down(amnesia.up(4)), 4);
    }

    #[test]
    fn another_cluster_or_marker_is_a_store_that_forgot() {
        let amnesia = Amnesia::new(Some("ns/".into()), None);
        assert!(!amnesia.observe(amnesia.ticket(), 7, 10));
        assert!(amnesia.observe(amnesia.ticket(), 8, 10));
        let amnesia = Amnesia::new(Some("ns/".into()), None);
        // One read per client, then only for a longer session.
        assert!(amnesia.needs_marker(Duration::from_secs(5)));
        assert!(!amnesia.observe_marker(None));
        amnesia.record_ttl(Duration::from_secs(5));
        assert!(!amnesia.needs_marker(Duration::from_secs(5)));
        assert!(amnesia.needs_marker(Duration::from_secs(6)));
        let marker = Marker::fresh(Duration::from_secs(5), 0);
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert!(amnesia.observe_marker(None));
        assert!(!amnesia.observe_marker(Some(&Marker::fresh(Duration::ZERO, 0))));
    }

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let amnesia = Amnesia::new(None, Some(Duration::from_secs(5)));
        assert!(amnesia.check_ttl(Duration::from_secs(5)).is_ok());
        assert!(matches!(
            amnesia.check_ttl(Duration::from_secs(6)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
