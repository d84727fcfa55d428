//! When the store forgets: telling that the store answering is not the one a client's
//! sessions were granted on, from the signs every revisioned store gives (a revision
//! going back, the epoch marker, and where the store has one, an identity such as
//! etcd's cluster id), for [`crate::forgetful::ForgetfulKv`].
//!
//! A store that forgets (a wiped data directory started again at the same address, a
//! new cluster behind the same endpoints, a snapshot restored, a database whose
//! tables were dropped) loses its leases with every key they held, and a new client
//! can be granted a lock at once while its former holder still acts on it until its
//! next renewal finds its lease gone.
//!
//! **The signs.** The client remembers the store's identity, where the store gives one,
//! and the highest revision it has seen; another identity, or a revision below the
//! highest one seen before the request was sent (a linearizable answer never goes back),
//! means the store forgot. A store started again from nothing restarts its revision at 1,
//! which only tells once the client sends a request before the new store's revision has
//! caught up; so the client also keeps the id of the store's **epoch marker**
//! ([`distsync_core::raw::EpochMarker`]), a key `<namespace>/amnesia` holding a random
//! id, the longest session TTL in use and the token offset. It reads the marker when it
//! opens a session, and again when a renewal finds its lease gone: a marker that is
//! missing or carries another id means the store is not the one the client knew.
//!
//! What follows a sign (the lost sessions, the lock-delay, the token offset) is
//! [`distsync_core::raw::EpochBook`]'s; [`Amnesia`] keeps the book beside what the
//! signs need: the identity, the highest revision, and the epoch each lease was
//! granted in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::kv::{LeaseId, Revision};
use distsync_core::Result;
use tokio::time::Instant;

/// The marker key under a namespace (a "kind" no primitive uses; lock and election
/// keys cannot start with `<namespace>/`).
pub fn marker_key(namespace: &str) -> String {
    format!("{namespace}/amnesia")
}

/// The hold key under a namespace: while it lives, grants wait (see the module docs).
pub fn hold_key(namespace: &str) -> String {
    format!("{namespace}/amnesia-hold")
}

use distsync_core::raw::locked;
use distsync_core::raw::{EpochBook, EpochMarker};

/// What the client knew when it sent a request, to judge its answer by.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    revision: Revision,
    epoch: u64,
}

#[derive(Debug)]
struct State {
    /// The marker, the lock-delay and the token offset, as every store that can
    /// forget keeps them.
    book: EpochBook,
    /// The store's identity in its answers (0: none seen yet, or the store gives none).
    identity: u64,
    /// The highest store revision seen in this epoch.
    revision: Revision,
    /// The epoch each lease of this client was granted in.
    leases: HashMap<LeaseId, u64>,
}

/// The detection state of one client (shared by its clones).
#[derive(Debug)]
pub struct Amnesia {
    /// The backend's name, for the warning when the store forgot.
    backend: &'static str,
    namespace: Option<String>,
    state: Mutex<State>,
}

impl Amnesia {
    /// Detection for a client of `backend`; `namespace` (when known) places the
    /// marker, `bound` is the configured bound on session TTLs.
    pub fn new(backend: &'static str, namespace: Option<String>, bound: Option<Duration>) -> Self {
        Self {
            backend,
            namespace,
            state: Mutex::new(State {
                book: EpochBook::new(bound),
                identity: 0,
                revision: 0,
                leases: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// The namespace the marker lives under, when the client knows it.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The configured bound on session TTLs.
    pub fn bound(&self) -> Option<Duration> {
        self.state().book.bound()
    }

    /// Refuses a session TTL above the bound, which the lock-delay relies on.
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidArgument`] for a TTL above the bound.
    pub fn check_ttl(&self, ttl: Duration) -> Result<()> {
        self.state().book.check_ttl(ttl)
    }

    /// Taken before a request is sent.
    pub fn ticket(&self) -> Ticket {
        let state = self.state();
        Ticket {
            revision: state.revision,
            epoch: state.book.epoch(),
        }
    }

    /// Judges an answer: the store's `identity` in it (0: none) and its revision;
    /// `true` when it shows the store forgot.
    pub fn observe(&self, ticket: Ticket, identity: u64, revision: Revision) -> bool {
        let mut state = self.state();
        let reason = if identity != 0 && state.identity != 0 && identity != state.identity {
            Some(format!(
                "the store's identity (etcd: its cluster id) changed from {:x} to \
                 {identity:x} (a new cluster at the same address)",
                state.identity
            ))
        } else if ticket.epoch == state.book.epoch() && revision > 0 && revision < ticket.revision {
            Some(format!(
                "the store revision went back from {} to {revision} (a wiped store or a \
                 restored snapshot)",
                ticket.revision
            ))
        } else {
            None
        };
        if identity != 0 {
            state.identity = identity;
        }
        match reason {
            Some(reason) => {
                state.revision = revision;
                forgot(self.backend, &mut state, &reason);
                true
            }
            None => {
                state.revision = state.revision.max(revision);
                false
            }
        }
    }

    /// The marker as read (`None`: missing); `true` when it shows the store forgot.
    pub fn observe_marker(&self, marker: Option<&EpochMarker>) -> bool {
        let mut state = self.state();
        let gone = "a wiped store or a recreated namespace";
        let reason = state.book.observe_marker(marker, gone);
        if let Some(reason) = &reason {
            forgot(self.backend, &mut state, reason);
        }
        reason.is_some()
    }

    /// Whether a hold key of `create_revision` (the store's) is one this client has
    /// not waited out yet (and records it).
    pub fn new_hold(&self, create_revision: Revision) -> bool {
        self.state().book.new_hold(create_revision)
    }

    /// Whether this client saw the store forget.
    pub fn detected(&self) -> bool {
        self.state().book.detected()
    }

    /// Starts a lock-delay of `delay`, from now (a missing marker, or the store's hold
    /// key, seen by a client with the bound).
    pub fn hold_for(&self, delay: Duration) {
        self.state().book.hold_for(delay);
    }

    /// The longest session TTL known (what a lock-delay waits).
    pub fn longest_ttl(&self) -> Duration {
        self.state().book.delay()
    }

    /// Records a session TTL this client uses.
    pub fn record_ttl(&self, ttl: Duration) {
        self.state().book.record_ttl(ttl);
    }

    /// The marker to write where there is none, or `None` with the one to keep.
    pub fn marker_to_write(
        &self,
        current: Option<&EpochMarker>,
        ttl: Duration,
    ) -> Option<EpochMarker> {
        self.state().book.marker_to_write(current, ttl)
    }

    /// Records the marker this client wrote.
    pub fn wrote_marker(&self, marker: &EpochMarker) {
        self.state().book.wrote_marker(marker);
    }

    /// When the lock-delay ends, if one runs.
    pub fn hold(&self) -> Option<Instant> {
        self.state().book.hold()
    }

    /// Whether the marker must be read again after a lock-delay (cleared).
    pub fn take_reread(&self) -> bool {
        self.state().book.take_reread()
    }

    /// A lease granted, in the present epoch.
    pub fn lease_granted(&self, lease: LeaseId) {
        let mut state = self.state();
        let epoch = state.book.epoch();
        state.leases.insert(lease, epoch);
    }

    /// A lease revoked or found gone.
    pub fn lease_ended(&self, lease: LeaseId) {
        self.state().leases.remove(&lease);
    }

    /// Whether a lease was granted by a store that has since forgotten it.
    pub fn lease_forgotten(&self, lease: LeaseId) -> bool {
        let state = self.state();
        state
            .leases
            .get(&lease)
            .is_some_and(|epoch| *epoch < state.book.epoch())
    }

    /// A store revision as reported up (0 and below: no revision, kept).
    pub fn up(&self, revision: Revision) -> Revision {
        self.state().book.up(revision)
    }

    /// A reported revision as the store knows it (0 and below kept; one from before
    /// the offset, that the store never had, becomes 1).
    pub fn down(&self, revision: Revision) -> Revision {
        self.state().book.down(revision)
    }
}

/// The store forgot: the book's new epoch and lock-delay (it warns), and how many of
/// this client's sessions that ends.
fn forgot(backend: &'static str, state: &mut State, reason: &str) {
    state.book.forgot(backend, reason);
    tracing::debug!(
        backend,
        sessions_lost = state.leases.len(),
        "sessions lost with the store"
    );
}

#[cfg(test)]
mod tests {
    use distsync_core::Error;

    use super::*;

    #[test]
    fn a_revision_going_back_is_a_store_that_forgot() {
        let amnesia = Amnesia::new("test", Some("ns/".into()), Some(Duration::from_secs(5)));
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
        let amnesia = Amnesia::new("test", Some("ns/".into()), None);
        assert!(!amnesia.observe(amnesia.ticket(), 7, 10));
        assert!(amnesia.observe(amnesia.ticket(), 8, 10));
        let amnesia = Amnesia::new("test", Some("ns/".into()), None);
        assert!(!amnesia.observe_marker(None));
        amnesia.record_ttl(Duration::from_secs(5));
        let marker = EpochMarker::fresh(Duration::from_secs(5), 0);
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert!(!amnesia.observe_marker(Some(&marker)));
        assert!(amnesia.observe_marker(None));
        assert!(!amnesia.observe_marker(Some(&EpochMarker::fresh(Duration::ZERO, 0))));
    }

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let amnesia = Amnesia::new("test", None, Some(Duration::from_secs(5)));
        assert!(amnesia.check_ttl(Duration::from_secs(5)).is_ok());
        assert!(matches!(
            amnesia.check_ttl(Duration::from_secs(6)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
