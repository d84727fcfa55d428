//! # distsync
//!
//! Distributed concurrency primitives behind one set of traits, over etcd, Redis,
//! PostgreSQL or an in-process memory store. Pick the store with a cargo feature and a
//! URL, write the code once:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("memory://").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! println!("holding {} with fencing token {}", guard.key(), guard.token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! ## The primitives
//!
//! Everything starts from [`connect`], which returns a [`Coordinator`]; held
//! primitives go through a [`Session`] (a lease kept alive in the background, whose
//! [`Session::lost`] fires before the store can give anything it held to anyone else).
//!
//! | primitive | from the coordinator | what it gives |
//! |---|---|---|
//! | [`Locker`] | [`Coordinator::locker`] | a [`LockGuard`] with a [`FencingToken`]; FIFO waiters; [`LockGuard::while_held`] |
//! | [`MultiLocker`] | [`Coordinator::multi_locker`] | several locks, all or nothing, without deadlock |
//! | [`Election`] | [`Coordinator::election`], [`Coordinator::lead`] | one leader, its term a fencing token; `lead` stays leader across losses |
//! | [`RwLock`] | [`Coordinator::rwlock`] | shared reads, exclusive fenced writes, a waiting writer blocks later readers |
//! | [`Semaphore`] | [`Coordinator::semaphore`] | N permits, FIFO |
//! | [`Queue`] | [`Coordinator::queue`] | durable FIFO and priority queue; at-most-once `dequeue` or at-least-once `receive` with a [`Delivery`] to ack or nack |
//! | [`Barrier`], [`DoubleBarrier`] | [`Coordinator::barrier`], [`Coordinator::double_barrier`] | hold and release; enter and leave together |
//! | [`Stm`] | [`Coordinator::stm`] | transactions over keys at etcd's isolation levels, retried on conflict |
//!
//! ## Which store?
//!
//! Every store gives the contract of every primitive (mutual exclusion, growing
//! fencing tokens, FIFO waiters, no lost or duplicated queue items); they differ under
//! faults, in durability and in speed, and the conformance suite measures each
//! (`docs/GUARANTEES.md` in the repository):
//!
//! - **etcd** if you want the reference: durable, linearizable, a cluster that keeps
//!   working when a member dies, and locks, elections and recipes shared with Go
//!   programs that use etcd's `concurrency` and `recipes` packages (`layout=go`).
//!   Slowest to grant; leases of at least 2 s.
//! - **PostgreSQL** if you already run it: durable and linearizable, many holds over
//!   a few connections, guarded writes and fencing in the same database as your data.
//!   Needs session pooling behind a pooler.
//! - **Redis** for speed: the fastest grants. Without an fsync-always append-only file a
//!   restart forgets every lock and queue item, and an asynchronous failover can lose
//!   acknowledged grants unless `wait_replicas` is set: the capabilities and the
//!   matrix say so. Sentinel and Cluster are supported.
//! - **memory** for tests: a real store in process, with every contract, so your code's
//!   tests need no server ([`memory`]).
//!
//! | URL | cargo feature | backend crate |
//! |---|---|---|
//! | `memory://` (fresh) or `memory://NAME` (shared in the process) | (always) | [`memory`] |
//! | `etcd://[user:password@]host:port[,host:port...][/namespace][?tls=true&ca=PATH&cert=PATH&key=PATH][&layout=go]` | `etcd` | `distsync-etcd` |
//! | `redis://` or `rediss://[user:password@]host:port[/db][?namespace=...&ca=PATH&cert=PATH&key=PATH][&allow_eviction=true]` (a server must run `maxmemory-policy noeviction` unless `allow_eviction=true`, which declares the guarantees lost) | `redis` | `distsync-redis` |
//! | `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?wait_replicas=1&wait_timeout=500]` (the primary found through Sentinels; `wait_replicas` makes grants survive a failover) | `redis` | `distsync-redis` |
//! | `redis+cluster://[user:password@]host:port[,host:port...][?wait_replicas=1&wait_timeout=500]` (every primitive in one hash slot) | `redis` | `distsync-redis` |
//! | `postgres://user[:password]@host:port/db[?schema=...&sslmode=verify-full&sslrootcert=PATH][&hold_connections=8]` | `postgres` | `distsync-postgres` |
//!
//! Every etcd, Redis and PostgreSQL URL also takes `connect_timeout=` (default 5 s)
//! and `timeout=` (default 10 s per request), as `1500ms`, `2s` or `1m`; a request to
//! a store gone silent fails within about `timeout=`. Print URLs with [`redact_url`]:
//! it masks passwords.
//!
//! The items here are the user's API: [`connect`] and the [`Coordinator`] it returns,
//! [`Session`]s, the primitive traits and their guards, [`Error`], [`Capabilities`].
//! What it takes to implement a store (the `Backend` trait, leases, guard
//! constructors, the `Kv` model and the recipes over it) is in [`raw`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The user's API, item by item (backend authors: `raw`).
/// Masks the secrets of a URL for printing (see [`distsync_core::redact_url`]).
pub use distsync_core::redact_url;
pub use distsync_core::{
    BoxError, Bytes, Capabilities, Coordinator, Error, FencingToken, HealthWatch, LeadOptions,
    LeaderInfo, Leadership, LiveSession, LockGuard, Lost, Name, ReadGuard, Result, Session,
    SessionHealth, SessionId, SessionOptions, DEFAULT_TTL,
};

// The primitives.
pub use distsync_core::{
    Barrier, Consumer, ConsumerOptions, Delivery, DoubleBarrier, Election, Locker, MultiLockGuard,
    MultiLocker, Permit, Queue, RwLock, Semaphore, DEFAULT_PRIORITY,
};

// Idempotent enqueue (`Queue::enqueue_once`).
pub use distsync_core::queue::{Enqueued, IdempotencyKey, DEDUP_WINDOW};

// The rate limiter (GCRA on the store's clock).
pub use distsync_core::rate_limiter::{self, Admission, Rate, RateLimiter};

// The shared counter and the count-down latch.
pub use distsync_core::counter::{self, Counter};
pub use distsync_core::latch::{self, CountDownLatch};

// Lock-delay after an unclean loss (`Coordinator::locker_with`).
pub use distsync_core::lock_delay::{self, LockOptions};

// Taking a lock back: the administrative break (`Coordinator::break_lock`).
pub use distsync_core::broken::{self, BrokenHold};

// Handing leadership over (`Leadership::resign_to`, `Coordinator::prefer`).
pub use distsync_core::hand_over::{
    self, Candidate, Candidates, HandOver, NotHandedOver, PreferenceRequest, Successor,
};

// The backends: one driver per store, and the list `connect` reads.
pub use distsync_core::driver::{self, Driver};

// Software transactional memory.
pub use distsync_core::{Committed, Isolation, Stm, StmOptions, StmTx};

/// The in-memory backend, for tests: `Coordinator::new(MemoryBackend::new())`.
pub use distsync_kv::memory::MemoryBackend;

// The in-memory backend (`memory://`), observability, migration between stores, who
// holds what, the notes on timed acquisition, and the backend author's API.
pub use distsync_core::{consumer, fence, instrument, migrate, status, timeout};
pub use distsync_kv::memory;

/// The backend author's API: the contract of `distsync_core::raw`, and the
/// revisioned key-value model with the primitives built on it (`distsync-kv`).
pub mod raw {
    #[doc(inline)]
    pub use distsync_core::raw::*;
    #[doc(inline)]
    pub use distsync_kv::memory::MemoryKv;
    #[doc(inline)]
    pub use distsync_kv::{kv, recipes};
}

// Who holds what ([`Coordinator::status`]).
pub use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, QueueStatus, RateLimiterStatus, StatusReport,
};

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use distsync_etcd as etcd;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use distsync_postgres as postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use distsync_redis as redis;
#[cfg(feature = "zookeeper")]
#[cfg_attr(docsrs, doc(cfg(feature = "zookeeper")))]
pub use distsync_zookeeper as zookeeper;

/// Every backend this build knows, in the order `connect` asks them: one line per
/// backend crate. A backend whose cargo feature is off is still listed, so that its
/// URLs get [`Error::FeatureDisabled`] naming the feature, not "unknown scheme".
pub const DRIVERS: &[Driver] = &[
    memory::DRIVER,
    #[cfg(feature = "etcd")]
    distsync_etcd::DRIVER,
    #[cfg(not(feature = "etcd"))]
    disabled::ETCD,
    #[cfg(feature = "redis")]
    distsync_redis::DRIVER,
    #[cfg(not(feature = "redis"))]
    disabled::REDIS,
    #[cfg(feature = "postgres")]
    distsync_postgres::DRIVER,
    #[cfg(not(feature = "postgres"))]
    disabled::POSTGRES,
    #[cfg(feature = "zookeeper")]
    distsync_zookeeper::DRIVER,
    #[cfg(not(feature = "zookeeper"))]
    disabled::ZOOKEEPER,
];

/// Connects to the store a URL names and returns a [`Coordinator`] over it.
///
/// `memory://` is always available and gives a fresh in-process store;
/// `memory://NAME` gives the process-wide store `NAME`, shared by every `connect` with
/// the same name (see [`memory::MemoryBackend::shared`]). `etcd://`,
/// `redis://` (also `rediss://`, `redis+sentinel://`, `redis+cluster://`) and
/// `postgres://` (also `postgresql://`) need their cargo feature; without it the error
/// says which feature to enable. [`DRIVERS`] lists them.
///
/// # Cancel safety
///
/// Dropping the future drops the half-made connection; nothing is held in the store
/// yet.
///
/// # Errors
/// [`Error::InvalidUrl`] for a URL that does not parse or names an unknown scheme,
/// [`Error::FeatureDisabled`] for a backend not compiled in, or the backend's
/// connection error.
pub async fn connect(url: &str) -> Result<Coordinator> {
    // Only the scheme is read here: each backend parses the rest of its URL itself
    // (an etcd URL may name several members, `etcd://h1:2379,h2:2379`, which is no
    // valid generic URL).
    let driver = driver::find(DRIVERS, url)?;
    (driver.connect)(url).await
}

/// The drivers of backends whose cargo feature is off: their schemes, answered with
/// [`Error::FeatureDisabled`]. Each is compiled only when its feature is off.
#[cfg(not(all(
    feature = "etcd",
    feature = "redis",
    feature = "postgres",
    feature = "zookeeper"
)))]
mod disabled {
    use distsync_core::{driver::Driver, Capabilities, Coordinator, Error, Result};
    use futures::future::BoxFuture;

    #[cfg(not(feature = "etcd"))]
    pub(crate) const ETCD: Driver = Driver::new(
        "etcd",
        &["etcd"],
        |url| off(url, "etcd"),
        || Capabilities::none("etcd"),
    )
    .not_built();
    #[cfg(not(feature = "redis"))]
    pub(crate) const REDIS: Driver = Driver::new(
        "redis",
        &[
            "redis",
            "rediss",
            "redis+sentinel",
            "redis+cluster",
            "rediss+cluster",
        ],
        |url| off(url, "redis"),
        || Capabilities::none("redis"),
    )
    .not_built();
    #[cfg(not(feature = "postgres"))]
    pub(crate) const POSTGRES: Driver = Driver::new(
        "postgres",
        &["postgres", "postgresql"],
        |url| off(url, "postgres"),
        || Capabilities::none("postgres"),
    )
    .not_built();
    #[cfg(not(feature = "zookeeper"))]
    pub(crate) const ZOOKEEPER: Driver = Driver::new(
        "zookeeper",
        &["zk", "zks"],
        |url| off(url, "zookeeper"),
        || Capabilities::none("zookeeper"),
    )
    .not_built();

    fn off(url: &str, feature: &'static str) -> BoxFuture<'static, Result<Coordinator>> {
        let scheme = distsync_core::driver::scheme_of(url)
            .unwrap_or(feature)
            .to_ascii_lowercase();
        Box::pin(async move { Err(Error::FeatureDisabled { scheme, feature }) })
    }
}

/// The code blocks of README.md and docs/, compiled (and run, unless marked `no_run`)
/// as doctests, so that what the documentation shows is what the code does. A block
/// that is not Rust says so (`sh`, `text`).
#[cfg(doctest)]
mod markdown {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/ARCHITECTURE.md")]
    struct Architecture;
    #[doc = include_str!("../docs/BENCHMARKS.md")]
    struct Benchmarks;
    #[doc = include_str!("../docs/CONNECTING.md")]
    struct Connecting;
    #[doc = include_str!("../docs/ERRORS.md")]
    struct Errors;
    #[doc = include_str!("../docs/FENCING.md")]
    struct Fencing;
    #[doc = include_str!("../docs/GUARANTEES.md")]
    struct Guarantees;
    #[doc = include_str!("../docs/HIGH_AVAILABILITY.md")]
    struct HighAvailability;
    #[doc = include_str!("../docs/MIGRATING.md")]
    struct Migrating;
}
