//! # distsync-core
//!
//! The contract of distsync: validated [`Name`]s, the [`Error`] enum, [`Session`]s
//! (leases kept alive in the background), guards carrying [`FencingToken`]s,
//! [`Capabilities`], and the primitive traits — [`Locker`], [`Election`],
//! [`RwLock`], [`Queue`], [`Barrier`], [`DoubleBarrier`] and [`Stm`] — behind the
//! object-safe [`Backend`] trait. Also the revisioned key-value model ([`kv`]) that
//! etcd-like stores implement, the primitives built on it as etcd's Go packages build
//! them ([`recipes`]), and the in-memory backend ([`memory`]), a real store in-process
//! that users can test against.
#![warn(missing_docs)]

pub mod backend;
pub mod barrier;
pub mod capabilities;
pub mod election;
pub mod error;
pub mod guard;
pub mod instrument;
pub mod kv;
pub mod lock;
pub mod memory;
pub mod migrate;
pub mod name;
pub mod queue;
pub mod recipes;
pub mod rwlock;
pub mod session;
pub mod stm;
pub mod token;

pub use backend::{Backend, Coordinator};
pub use barrier::{Barrier, DoubleBarrier};
pub use bytes::Bytes;
pub use capabilities::Capabilities;
pub use election::{Election, LeaderInfo, Leadership, Proclaim};
pub use error::{BoxError, Error, Result};
pub use guard::{LockGuard, ReadGuard, ReleaseFn};
pub use lock::Locker;
pub use name::Name;
pub use queue::{Queue, DEFAULT_PRIORITY};
pub use rwlock::RwLock;
pub use session::{KeepAlive, Lease, Session, SessionId, SessionOptions, DEFAULT_TTL};
pub use stm::{Committed, Isolation, Stm, StmAttempt, StmOptions, StmTx, Write};
pub use token::FencingToken;
