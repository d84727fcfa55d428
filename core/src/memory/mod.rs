//! The in-memory backend: a revisioned key-value store with leases and watches, in
//! process, running the same recipes as the etcd backend.

use std::time::Duration;

use crate::capabilities::Capabilities;
use crate::recipes::KvBackend;

mod store;

pub use store::{MemoryKv, StoreError, DEFAULT_RETAINED_REVISIONS};

/// The in-memory backend (`memory://`).
pub type MemoryBackend = KvBackend<MemoryKv>;

impl KvBackend<MemoryKv> {
    /// A fresh, empty in-memory store.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        KvBackend::with_kv(MemoryKv::new(), "", capabilities())
    }
}

/// The shortest session TTL the memory backend accepts: 100 ms.
///
/// The store keeps lease TTLs exactly (it does not round up to whole seconds as etcd
/// does) and the session renews every TTL/3, so a 100 ms session is renewed every
/// ~33 ms; shorter TTLs would expire under ordinary scheduling delays of a busy test
/// machine rather than because a holder stalled.
pub const MIN_SESSION_TTL: Duration = Duration::from_millis(100);

/// What the memory backend offers: every primitive and every STM level, through the
/// same recipes as etcd ([`crate::recipes`]), with etcd's guarantees, except that its
/// state lives in the process and so does not survive a restart.
///
/// - `fencing`: tokens are create revisions, which only grow;
/// - `fifo_waiters`: each waiter waits for its direct predecessor's key;
/// - `lost_notification`: a revoked or expired lease is seen by the next renewal,
///   and guards also watch their own key;
/// - `stalled_holder_expires`: leases not renewed within their TTL expire and
///   their keys are deleted;
/// - `linearizable`: one store behind one lock;
/// - `survives_restart`: no, the store is in-process.
pub fn capabilities() -> Capabilities {
    Capabilities {
        survives_restart: false,
        ..Capabilities::all("memory", MIN_SESSION_TTL)
    }
}
