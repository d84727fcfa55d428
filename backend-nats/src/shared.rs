//! What every handle of one backend shares: the configuration, the connection to the
//! bucket, and the sessions this process holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use distsync_core::raw::locked;

use crate::amnesia::Amnesia;
use crate::config::NatsConfig;
use crate::line_listing::LineListings;
use crate::session::LeaseInner;
use crate::store::Store;

/// The state of one backend.
pub(crate) struct Shared {
    pub(crate) config: NatsConfig,
    pub(crate) store: Store,
    /// The bucket through a connection of its own, for the sessions' renewals only.
    /// NATS serves each client connection's requests in turn: a burst of the process's
    /// other requests (a thousand waiters each listing their line) can keep the
    /// server on one connection for seconds, and renewals queued behind it would miss
    /// their sessions' deadlines, losing every session of the process at once.
    pub(crate) renewals: Store,
    /// Whether the store forgot, and what follows (see `src/amnesia.rs`).
    pub(crate) amnesia: Arc<Amnesia>,
    /// The listings of lines that this process's waiters share (see
    /// `src/line_listing.rs`).
    pub(crate) listings: LineListings,
    /// The sessions opened through this backend and not yet dropped, by id: a revoke of
    /// one of them is its own close.
    sessions: Mutex<HashMap<u64, Weak<LeaseInner>>>,
}

impl Shared {
    /// The state of a backend whose bucket's stream was made at `created`, renewing
    /// its sessions through `renewals`.
    pub(crate) fn new(config: NatsConfig, store: Store, renewals: Store, created: i128) -> Self {
        Self {
            amnesia: Arc::new(Amnesia::new(config.max_session_ttl(), created)),
            config,
            store,
            renewals,
            listings: LineListings::default(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Records a session of this process.
    pub(crate) fn register(&self, id: u64, lease: Weak<LeaseInner>) {
        let mut sessions = locked(&self.sessions);
        sessions.retain(|_, lease| lease.strong_count() > 0);
        sessions.insert(id, lease);
    }

    /// The session `id` of this process, if it is alive.
    pub(crate) fn session(&self, id: u64) -> Option<std::sync::Arc<LeaseInner>> {
        let sessions = locked(&self.sessions);
        sessions.get(&id).and_then(Weak::upgrade)
    }
}
