//! The in-memory backend (`memory://`): a revisioned key-value store with leases and
//! watches, in process, running the same recipes as the etcd backend.
//!
//! - [`MemoryBackend`] (`backend.rs`): the backend, its URL ([`MemoryBackend::from_url`]),
//!   [`capabilities`] and [`MIN_SESSION_TTL`];
//! - [`MemoryKv`] (`store.rs`): the store, a faithful in-process model of etcd's MVCC
//!   store, split by concern into `mvcc.rs` (revisions, history, compaction, ranges and
//!   transactions), `long_lines.rs` (directories holding many live keys, indexed by
//!   create revision), `lease.rs` (grant, keepalive, expiry, [`MemoryKv::freeze_lease`])
//!   and `watch.rs` (history replay and live delivery);
//! - [`FaultyKv`] (`faulty.rs`): the store behind a fault injector (partitions, failed
//!   transactions and reads), for tests that need a store that misbehaves on demand.

mod backend;
mod faulty;
mod lease;
mod long_lines;
#[cfg(test)]
mod long_lines_tests;
mod mvcc;
mod records;
mod store;
#[cfg(test)]
mod test_support;
mod watch;
mod watchers;

pub use backend::{
    capabilities, connect, MemoryBackend, BACKEND, DRIVER, MAX_VALUE_SIZE, MIN_SESSION_TTL, SCHEME,
};
pub use faulty::{FaultyKv, Partition, TxnFault};
pub use store::{MemoryKv, DEFAULT_RETAINED_REVISIONS};
