//! The in-memory backend: a revisioned key-value store with leases and watches, in
//! process, running the same recipes as the etcd backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
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

    /// The process-wide in-memory store called `name` (`memory://<name>`): every
    /// backend made with the same name shares one store, so several coordinators in
    /// one process (say, two simulated services in a test) see each other's locks and
    /// queues. The store lives while a backend over it does; the next call after the
    /// last one is dropped starts an empty store.
    pub fn shared(name: &str) -> Self {
        static STORES: OnceLock<Mutex<HashMap<String, Weak<MemoryKv>>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stores.retain(|_, store| store.strong_count() > 0);
        let store = match stores.get(name).and_then(Weak::upgrade) {
            Some(store) => store,
            None => {
                let store = Arc::new(MemoryKv::new());
                stores.insert(name.to_owned(), Arc::downgrade(&store));
                store
            }
        };
        KvBackend::with_shared_kv(store, "", capabilities())
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

#[cfg(test)]
mod tests {
    use super::MemoryBackend;
    use crate::Coordinator;

    #[tokio::test]
    async fn backends_with_one_name_share_a_store_and_others_do_not() {
        let a = Coordinator::new(MemoryBackend::shared("memory-mod-test"));
        let b = Coordinator::new(MemoryBackend::shared("memory-mod-test"));
        let other = Coordinator::new(MemoryBackend::shared("memory-mod-test-other"));
        a.queue("q").unwrap().enqueue("x".into()).await.unwrap();
        assert_eq!(other.queue("q").unwrap().try_dequeue().await.unwrap(), None);
        assert_eq!(
            b.queue("q").unwrap().try_dequeue().await.unwrap().unwrap(),
            "x"
        );
        let session = a.session().await.unwrap();
        let _held = a.locker(&session, "l").unwrap().lock().await.unwrap();
        let session_b = b.session().await.unwrap();
        assert!(b
            .locker(&session_b, "l")
            .unwrap()
            .try_lock()
            .await
            .unwrap()
            .is_none());
    }
}
