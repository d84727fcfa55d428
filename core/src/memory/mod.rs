//! The in-memory backend: a revisioned key-value store with leases and watches, in
//! process, running the same recipes as the etcd backend.

use crate::capabilities::Capabilities;
use crate::recipes::KvBackend;

mod store;

pub use store::MemoryKv;

/// The in-memory backend (`memory://`).
pub type MemoryBackend = KvBackend<MemoryKv>;

impl KvBackend<MemoryKv> {
    /// A fresh, empty in-memory store.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        KvBackend::with_kv(MemoryKv::new(), "", capabilities())
    }
}

/// What the memory backend offers.
pub fn capabilities() -> Capabilities {
    Capabilities::none("memory")
}
