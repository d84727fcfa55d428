//! # distsync-core
//!
//! The contract of distsync: validated [`Name`]s, the [`Error`] enum, [`Session`]s
//! (leases kept alive in the background) and the [`LiveSession`] that replaces them
//! after a loss, guards carrying [`FencingToken`]s, [`Capabilities`], the primitive
//! traits ([`Locker`], [`Election`], [`RwLock`], [`Queue`], [`Barrier`],
//! [`DoubleBarrier`], [`Semaphore`]), the [`Stm`] handle for transactions, and the
//! [`Coordinator`] that hands them out through the metrics and tracing layer
//! ([`instrument`]).
//!
//! Core knows no store. Each store is a crate that implements [`raw::Backend`] and
//! exports a driver: `distsync-kv` (the memory store, and the recipes over etcd's
//! model), `distsync-etcd`, `distsync-redis` (single, Sentinel, Cluster),
//! `distsync-postgres`, `distsync-zookeeper`, `distsync-mysql` (MySQL and MariaDB) and
//! `distsync-nats` (NATS JetStream).
//!
//! # Handles and inputs: one rule
//!
//! - **What a backend supplies is an `Arc<dyn Trait>`.** [`Locker`], [`Election`],
//!   [`RwLock`], [`Queue`], [`Barrier`], [`DoubleBarrier`], [`Semaphore`], [`Counter`],
//!   [`CountDownLatch`] and [`RateLimiter`] have one implementation per store, chosen
//!   at run time from a URL, so the [`Coordinator`] hands them out as trait objects,
//!   behind an `Arc` so that they are cheap to clone into tasks.
//! - **What the library builds on those is a concrete type.** [`MultiLocker`] (over
//!   lockers), [`Consumer`] (over a queue), [`LiveSession`] (over sessions) and [`Stm`]
//!   (over a backend's engine) have one implementation, in core, so there is nothing to
//!   hide behind a trait; each is `Clone` and as cheap to clone as an `Arc`.
//! - **A hold is an owned value, never shared:** [`LockGuard`] (a lock's or a write
//!   lock's hold), [`Permit`] (a semaphore's), [`ReadGuard`], [`Leadership`],
//!   [`MultiLockGuard`], [`Delivery`]. Its consuming method (`unlock`, `release`,
//!   `resign`, `ack`) releases it; dropping it releases it in the background.
//! - **Every value parameter takes `impl Into<Bytes> + Send`** (an item, a candidate's
//!   value, a write; [`StmTx::put`], which does not wait, needs no `Send`), so a
//!   `&'static str`, a `String`, a `Vec<u8>` or [`Bytes`] is passed as is. On a trait
//!   object these are inherent methods of `dyn Election` and `dyn Queue` (`campaign`,
//!   `enqueue`, ...), which need no import. An object-safe trait method cannot be
//!   generic: what a backend implements takes [`Bytes`] under a name ending in
//!   `_bytes` ([`Election::campaign_bytes`], [`Queue::append_bytes`],
//!   ...; see [`raw`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use distsync::Bytes;
//! let coordinator = distsync::connect("memory://").await?;
//! let session = coordinator.session().await?;
//! let leadership = coordinator.election(&session, "leader")?.campaign("a").await?;
//! // Every value type, as is.
//! leadership.proclaim("text").await?;
//! leadership.proclaim(String::from("owned text")).await?;
//! leadership.proclaim(vec![0u8, 1, 2]).await?;
//! leadership.proclaim(Bytes::from_static(b"bytes")).await?;
//! leadership.proclaim(&b"static bytes"[..]).await?;
//! // Through a trait object, the same.
//! let queue = coordinator.queue("jobs")?;
//! queue.enqueue("job").await?;
//! queue.enqueue(String::from("job")).await?;
//! queue.enqueue(vec![1u8, 2]).await?;
//! queue.enqueue(Bytes::from("job")).await?;
//! # Ok(()) }
//! ```
//!
//! Applications use these through the `distsync` facade crate. Backend authors find
//! what it takes to implement a store in [`raw`]: the object-safe `Backend` trait,
//! leases, guard constructors and the contract a backend must keep. The in-memory
//! store and the primitives over a revisioned key-value store live in `distsync-kv`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
mod backoff;
pub mod barrier;
pub mod broken;
pub mod capabilities;
pub mod consumer;
mod contention;
pub mod coordinator;
pub mod counter;
pub mod delivery;
pub mod driver;
pub mod election;
pub mod error;
pub mod fence;
pub mod group;
pub mod guard;
pub mod hand_over;
pub mod hand_over_record;
pub mod instrument;
mod job_index;
pub mod latch;
mod layers;
pub mod lead;
pub mod live_session;
pub mod lock;
pub mod lock_delay;
pub mod lock_options;
mod make;
pub mod migrate;
pub mod multi_lock;
pub mod name;
mod primitives;
pub mod queue;
pub mod rate_limiter;
pub mod raw;
pub mod redact;
mod revocable;
pub mod revocation;
pub mod rwlock;
pub mod schedule;
pub mod scheduled_job;
pub mod semaphore;
pub mod session;
pub mod shards;
pub mod snapshot;
pub mod status;
pub mod stm;
mod timeout;
pub mod token;
mod value_size;

pub use barrier::{Barrier, DoubleBarrier};
pub use broken::BrokenHold;
pub use bytes::Bytes;
pub use capabilities::Capabilities;
pub use consumer::{Consumer, ConsumerOptions};
pub use coordinator::Coordinator;
pub use counter::Counter;
pub use delivery::Delivery;
pub use driver::Driver;
pub use election::{Election, LeaderInfo, Leadership};
pub use error::{BoxError, Error, Result};
pub use guard::{LockGuard, ReadGuard};
pub use hand_over::{Candidate, Candidates, HandOver, NotHandedOver, PreferenceRequest, Successor};
pub use latch::CountDownLatch;
pub use lead::LeadOptions;
pub use live_session::LiveSession;
pub use lock::Locker;
pub use lock_options::{Fairness, LockOptions};
pub use multi_lock::{MultiLockGuard, MultiLocker};
pub use name::Name;
pub use queue::{DEFAULT_PRIORITY, Queue};
pub use queue::{Enqueued, IdempotencyKey};
pub use rate_limiter::{Admission, Rate, RateLimiter};
pub use redact::redact_url;
pub use revocation::ReleaseRequest;
pub use rwlock::RwLock;
pub use semaphore::{Permit, Semaphore};
pub use session::{
    DEFAULT_TTL, HealthWatch, Lost, Session, SessionHealth, SessionId, SessionOptions,
};
pub use stm::{Committed, Isolation, Stm, StmOptions, StmTx};
pub use timeout::timeout;
pub use token::FencingToken;

// The implementors' items at the crate root too, where the backends name them;
// documented in [`raw`].
#[doc(hidden)]
pub use backend::Backend;
#[doc(hidden)]
pub use election::Proclaim;
#[doc(hidden)]
pub use guard::ReleaseFn;
#[doc(hidden)]
pub use primitives::Primitives;
#[doc(hidden)]
pub use session::{KeepAlive, Lease};
#[doc(hidden)]
pub use stm::{StmAttempt, StmEngine, StmRetry, Write};
