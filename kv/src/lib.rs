//! # distsync-kv
//!
//! distsync over a revisioned key-value store, the model etcd offers: ranges read at
//! a revision, compare-and-swap transactions, watches from a revision, and leases.
//!
//! - [`kv`]: the [`Kv`](kv::Kv) trait a store implements to offer those operations;
//! - [`recipes`]: every primitive of distsync built on a [`Kv`](kv::Kv) exactly as
//!   etcd's Go `concurrency` and `recipes` packages build them, behind one
//!   [`Backend`](distsync_core::raw::Backend), [`KvBackend`](recipes::KvBackend);
//! - [`memory`]: the in-memory store, a reference model of etcd's MVCC store with
//!   fault hooks, and the `memory://` backend over it: a real store in-process that
//!   users test against.
//!
//! The etcd backend (`distsync-etcd`) is a [`Kv`](kv::Kv) over etcd's client and a
//! [`KvBackend`](recipes::KvBackend) over it, as the memory backend is over
//! [`MemoryKv`](memory::MemoryKv) and the MySQL backend (`distsync-mysql`) over InnoDB
//! tables. Redis, PostgreSQL, ZooKeeper and NATS offer no such model cheaply, so their
//! crates implement the primitives in the store's own terms.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use distsync::Coordinator;
//! use distsync::store::memory::MemoryBackend;
//! let coordinator = Coordinator::new(MemoryBackend::new());
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod amnesia;
#[cfg(any(test, feature = "contract-tests"))]
#[cfg_attr(docsrs, doc(cfg(feature = "contract-tests")))]
pub mod contract_tests;
pub mod forgetful;
pub mod kv;
pub mod memory;
pub mod recipes;
mod store_error;

pub use store_error::StoreError;
