//! # distsync-core
//!
//! The contract of distsync: validated [`Name`]s, the [`Error`] enum, [`Session`]s
//! (leases kept alive in the background), guards carrying [`FencingToken`]s,
//! [`Capabilities`], the primitive traits — [`Locker`], [`Election`], [`RwLock`],
//! [`Queue`], [`Barrier`], [`DoubleBarrier`] — the [`Stm`] handle for transactions,
//! and the [`Coordinator`] that hands them out, plus the in-memory backend ([`memory`]), a real store
//! in-process that users can test against.
//!
//! Applications use these through the `distsync` facade crate. Backend authors find
//! what it takes to implement a store in [`raw`]: the object-safe `Backend` trait,
//! leases, guard constructors, the revisioned key-value model (`Kv`) that etcd-like
//! stores implement and the primitives built on it as etcd's Go packages build them
//! (`recipes`), with the contract a backend must keep.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
mod backoff;
pub mod barrier;
pub mod capabilities;
pub mod delivery;
pub mod election;
pub mod error;
pub mod fence;
pub mod guard;
pub mod instrument;
pub mod lead;
pub mod lock;
pub mod memory;
pub mod migrate;
pub mod multi_lock;
pub mod name;
pub mod queue;
pub mod raw;
pub mod redact;
pub mod rwlock;
pub mod semaphore;
pub mod session;
pub mod status;
pub mod stm;
pub mod timeout;
pub mod token;

pub use backend::Coordinator;
pub use barrier::{Barrier, DoubleBarrier};
pub use bytes::Bytes;
pub use capabilities::Capabilities;
pub use delivery::Delivery;
pub use election::{Election, LeaderInfo, Leadership};
pub use error::{BoxError, Error, Result};
pub use guard::{LockGuard, ReadGuard};
pub use lead::LeadOptions;
pub use lock::Locker;
pub use multi_lock::{MultiLockGuard, MultiLocker};
pub use name::Name;
pub use queue::{Queue, DEFAULT_PRIORITY};
pub use redact::redact_url;
pub use rwlock::RwLock;
pub use semaphore::Semaphore;
pub use session::{
    HealthWatch, Lost, Session, SessionHealth, SessionId, SessionOptions, DEFAULT_TTL,
};
pub use stm::{Committed, Isolation, Stm, StmOptions, StmTx};
pub use token::FencingToken;

// The implementors' items, kept at their old paths for the backends; documented in
// [`raw`].
#[doc(hidden)]
pub use backend::Backend;
#[doc(hidden)]
pub use election::Proclaim;
#[doc(hidden)]
pub use guard::ReleaseFn;
#[doc(hidden)]
pub use raw::{kv, recipes};
#[doc(hidden)]
pub use session::{KeepAlive, Lease};
#[doc(hidden)]
pub use stm::{StmAttempt, StmEngine, StmRetry, Write};
