//! The in-memory backend (`memory://`): a revisioned key-value store with leases and
//! watches, in process, running the same recipes as the etcd backend.
//!
//! - [`MemoryBackend`] (`backend.rs`): the backend, its URL ([`MemoryBackend::from_url`]),
//!   [`capabilities`] and [`MIN_SESSION_TTL`];
//! - [`MemoryKv`] (`store.rs`): the store, a faithful in-process model of etcd's MVCC
//!   store, split by concern into `mvcc.rs` (revisions, history, compaction, ranges and
//!   transactions), `lease.rs` (grant, keepalive, expiry, [`MemoryKv::freeze_lease`])
//!   and `watch.rs` (history replay and live delivery).

mod backend;
mod lease;
mod mvcc;
mod records;
mod store;
#[cfg(test)]
mod test_support;
mod watch;
mod watchers;

pub use backend::{capabilities, connect, MemoryBackend, BACKEND, DRIVER, MIN_SESSION_TTL, SCHEME};
pub use store::{MemoryKv, StoreError, DEFAULT_RETAINED_REVISIONS};
