//! # distsync
//!
//! Distributed concurrency primitives behind one set of traits, over etcd, Redis,
//! PostgreSQL, ZooKeeper, MySQL or MariaDB, NATS JetStream or an in-process memory
//! store. Pick the store with a cargo
//! feature and a URL, write the code once:
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
//! | [`lock::MultiLocker`] | [`Coordinator::multi_locker`] | several locks, all or nothing, without deadlock |
//! | [`Election`] | [`Coordinator::election`], [`Coordinator::lead`] | one leader, its term a fencing token; `lead` stays leader across losses |
//! | [`RwLock`] | [`Coordinator::rwlock`] | shared reads, exclusive fenced writes, a waiting writer blocks later readers |
//! | [`Semaphore`] | [`Coordinator::semaphore`] | N permits, FIFO |
//! | [`Queue`] | [`Coordinator::queue`], [`Coordinator::consumer`] | durable FIFO and priority queue; at-least-once `receive` with a [`Delivery`] to ack or nack, a consumer loop with a dead-letter queue ([`queue`]) |
//! | [`Barrier`], [`DoubleBarrier`] | [`Coordinator::barrier`], [`Coordinator::double_barrier`] | hold and release; enter and leave together |
//! | [`Counter`], [`CountDownLatch`] | [`Coordinator::counter`], [`Coordinator::latch`] | a shared integer; a count that releases its waiters at zero |
//! | [`rate_limiter::RateLimiter`] | [`Coordinator::rate_limiter`] | GCRA on the store's clock |
//! | [`stm::Stm`] | [`Coordinator::stm`] | transactions over keys at etcd's isolation levels, retried on conflict |
//!
//! The root holds what a user types; the rest is in one module each: [`session`],
//! [`lock`], [`election`], [`queue`], [`stm`], [`rate_limiter`], [`fence`] (tokens
//! checked in process), [`instrument`] (spans and metrics) and [`store`] (the
//! backends, who holds what, migration, and what it takes to write a store).
//!
//! Every blocking call (`lock`, `acquire`, `campaign`, `dequeue`, `receive`, a
//! barrier's `wait`, ...) waits for as long as you let it, through store outages, and
//! is cancel-safe; bound it with [`timeout`], which also tells "the store is down"
//! (the store's error) from "nobody released in time" ([`Error::Timeout`]).
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
//! - **ZooKeeper** if you already run it: an ensemble that keeps working when a member
//!   dies, and locks shared with Curator's recipes.
//! - **Redis** for speed: the fastest grants. Without an fsync-always append-only file a
//!   restart forgets every lock and queue item, and an asynchronous failover can lose
//!   acknowledged grants unless `wait_replicas` is set: the capabilities and the
//!   matrix say so. Sentinel and Cluster are supported.
//! - **memory** for tests: a real store in process, with every contract, so your code's
//!   tests need no server ([`store::memory`]).
//!
//! | URL | cargo feature | backend |
//! |---|---|---|
//! | `memory://` (fresh) or `memory://NAME` (shared in the process) | (always) | [`store::memory`] |
//! | `etcd://[user:password@]host:port[,host:port...][/namespace][?tls=true&ca=PATH&cert=PATH&key=PATH][&layout=go]` | `etcd` | `store::etcd` |
//! | `redis://` or `rediss://[user:password@]host:port[/db][?namespace=...&ca=PATH&cert=PATH&key=PATH][&allow_eviction=true]` (a server must run `maxmemory-policy noeviction` unless `allow_eviction=true`, which declares the guarantees lost) | `redis` | `store::redis` |
//! | `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?wait_replicas=1&wait_timeout=500ms]` (the primary found through Sentinels; `wait_replicas` makes grants survive a failover) | `redis` | `store::redis` |
//! | `redis+cluster://[user:password@]host:port[,host:port...][?wait_replicas=1&wait_timeout=500ms]` (every primitive in one hash slot) | `redis` | `store::redis` |
//! | `postgres://user[:password]@host:port/db[?schema=...&sslmode=verify-full&sslrootcert=PATH][&hold_connections=8]` | `postgres` | `store::postgres` |
//! | `zk://` or `zks://[user:password@]host:port[,host:port...][/root][?ca=PATH]` | `zookeeper` | `store::zookeeper` |
//! | `mysql://` or `mariadb://user[:password]@host:port/db[?table_prefix=...&poll_interval=20ms&pool_size=8]` | `mysql` | `store::mysql` |
//! | `nats://` or `tls://[user:password@]host:port[,host:port...][/][?bucket=...&replicas=1&creds=PATH&ca=PATH]` (JetStream key-value, nats-server 2.12 or later) | `nats` | `store::nats` |
//!
//! Every URL but `memory://` also takes `connect_timeout=` (default 5 s) and
//! `timeout=` (default 10 s per request), as `1500ms`, `2s` or `1m`; a request to a
//! store gone silent fails within about `timeout=`. Print URLs with
//! [`store::redact_url`]: it masks passwords.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// What a user types: the entry point, sessions, errors, names, the primitive traits
// and their holds, and the one way to bound a wait. Everything else is in exactly one
// module below.
pub use distsync_core::{
    timeout, Barrier, Bytes, Capabilities, Coordinator, CountDownLatch, Counter, Delivery,
    DoubleBarrier, Election, Error, FencingToken, Leadership, LockGuard, Locker, Name, Permit,
    Queue, ReadGuard, Result, RwLock, Semaphore, Session, SessionOptions,
};

pub mod session {
    //! A session's health and loss, the session that replaces itself after a loss, and the default TTL (see
    //! [`Session`](crate::Session) and [`Coordinator::live_session`](crate::Coordinator::live_session)).
    pub use distsync_core::{
        HealthWatch, LiveSession, Lost, SessionHealth, SessionId, DEFAULT_TTL,
    };
}

pub mod lock {
    //! Options of a lock (its fairness, the lock-delay after an unclean loss), the administrative break, and
    //! several locks taken all or nothing (see [`Locker`](crate::Locker) and
    //! [`Coordinator::locker_with`](crate::Coordinator::locker_with)).
    pub use distsync_core::{BrokenHold, Fairness, LockOptions, MultiLockGuard, MultiLocker};
}

pub mod election {
    //! Staying leader across losses ([`Coordinator::lead`](crate::Coordinator::lead)), what a reader sees of the
    //! leader, and handing leadership over to a chosen successor (see [`Election`](crate::Election)).
    pub use distsync_core::{
        Candidate, Candidates, HandOver, LeadOptions, LeaderInfo, NotHandedOver, PreferenceRequest,
        Successor,
    };
}

pub mod queue {
    //! The consumer loop with a dead-letter queue, idempotent enqueue and priorities (see [`Queue`](crate::Queue)).
    //!
    //! Which way to consume: [`Queue::receive`](crate::Queue::receive) hands out a [`Delivery`](crate::Delivery) held
    //! through a session, acknowledged or put back by the caller (at-least-once); [`Consumer`] runs that loop for you,
    //! with retries, a processing deadline and a dead-letter queue; [`Queue::dequeue`](crate::Queue::dequeue) removes
    //! the item as it returns it (at-most-once: a crash after it loses the item).
    pub use distsync_core::consumer::DEAD_LETTER_SUFFIX;
    pub use distsync_core::queue::{DEDUP_WINDOW, MAX_STALE_CLAIM, MIN_STALE_CLAIM, STALE_CLAIM};
    pub use distsync_core::{
        BoxError, Consumer, ConsumerOptions, Enqueued, IdempotencyKey, DEFAULT_PRIORITY,
    };
}

pub mod replicas {
    //! Work across replicas: group membership (live processes joined through their sessions,
    //! [`Coordinator::group`](crate::Coordinator::group)), shard ownership (a fixed set of shards spread over a
    //! group's live members, each a fenced hold, [`Coordinator::shards`](crate::Coordinator::shards)) and scheduled
    //! singleton jobs (once per occurrence across every replica, with `at_most`/`at_least` bounds kept in the store
    //! and a fencing token per run, [`Coordinator::scheduled_job`](crate::Coordinator::scheduled_job)).
    pub use distsync_core::group::{
        Group, GroupChange, Member, Membership, DEFAULT_POLL, MEMBERS_SEGMENT,
    };
    pub use distsync_core::schedule::Schedule;
    pub use distsync_core::scheduled_job::{
        JobOptions, JobStatus, LastRun, Missed, Occurrence, ScheduledJob, RECORD_SUFFIX,
    };
    pub use distsync_core::shards::{
        assign, OwnedShards, ShardCounts, ShardOptions, ShardPin, ShardWork, Shards, MAX_SHARDS,
        SHARDS_SEGMENT,
    };
}

pub mod stm {
    //! Software transactional memory: transactions over keys at etcd's isolation levels, retried on conflict
    //! ([`Coordinator::stm`](crate::Coordinator::stm)).
    pub use distsync_core::{Committed, Isolation, Stm, StmOptions, StmTx};
}

pub mod rate_limiter {
    //! The rate limiter (GCRA on the store's clock, [`Coordinator::rate_limiter`](crate::Coordinator::rate_limiter)).
    pub use distsync_core::{Admission, Rate, RateLimiter};
}

pub use distsync_core::{fence, instrument};

pub mod store {
    //! The stores: their drivers, the memory store for tests, each backend's own module (behind its cargo feature), who
    //! holds what ([`status`]), the operators' web console over it (`console`, behind the `console` feature), moving
    //! state between stores ([`migrate`]), and what it takes to write a store ([`raw`]).
    pub use distsync_core::migrate::{migrate, MigrateOptions, MigrationReport};
    pub use distsync_core::{redact_url, status, Driver};
    pub use distsync_kv::memory;

    #[cfg(feature = "console")]
    #[cfg_attr(docsrs, doc(cfg(feature = "console")))]
    pub use distsync_console as console;
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub use distsync_etcd as etcd;
    #[cfg(feature = "mysql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
    pub use distsync_mysql as mysql;
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub use distsync_nats as nats;
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub use distsync_postgres as postgres;
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub use distsync_redis as redis;
    #[cfg(feature = "zookeeper")]
    #[cfg_attr(docsrs, doc(cfg(feature = "zookeeper")))]
    pub use distsync_zookeeper as zookeeper;

    pub mod raw {
        //! The backend author's API: the contract a store implements (the `Backend` trait,
        //! leases, guard constructors, retries), and the revisioned key-value model with
        //! the primitives built on it (`distsync-kv`).
        pub use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
        pub use distsync_core::raw::{
            call_id, check_session_ttl, detached, join_host_port, leadership, lock_guard, locked,
            name_connect_timeout, name_under, parse_duration, parse_host_port, parse_url_flag,
            permit, random_fraction, random_u64, read_guard, refusing_hosts, retry, start_session,
            waited, with_guarded_write, with_release_request_watch, Backend, Backoff, Claim,
            ClaimGuard, CleanUp, Contention, EpochBook, EpochMarker, GuardStoreSide, GuardedWrite,
            KeepAlive, Lease, LossWatchFn, Make, MaxSessionTtl, MultiHostUrl, OnSession,
            Primitives, ReleaseFn, ReleaseRequestWatchFn, SessionStoreSide, Settle, SharedSettings,
            StmAttempt, StmEngine, StmRetry, UrlGrammar, UrlOptions, Write,
            DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
        };
        pub use distsync_core::Proclaim;
        pub use distsync_core::{config_accessors, impl_primitives};
        pub use distsync_kv::{kv, recipes};
    }

    /// The driver among [`DRIVERS`] that answers `url` (by its scheme), as
    /// [`connect`](crate::connect) finds it, without connecting.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`](crate::Error::InvalidUrl) (the URL redacted) when `url` has
    /// no scheme or no driver answers it, listing the schemes they do answer.
    pub fn driver_for(url: &str) -> crate::Result<&'static Driver> {
        distsync_core::driver::find(DRIVERS, url)
    }

    /// Every backend this build knows, in the order [`connect`](crate::connect) asks
    /// them: one line per backend crate. A backend whose cargo feature is off is still
    /// listed, so that its URLs get [`Error::FeatureDisabled`](crate::Error) naming the
    /// feature, not "unknown scheme".
    pub const DRIVERS: &[Driver] = &[
        memory::DRIVER,
        #[cfg(feature = "etcd")]
        distsync_etcd::DRIVER,
        #[cfg(not(feature = "etcd"))]
        super::disabled::ETCD,
        #[cfg(feature = "redis")]
        distsync_redis::DRIVER,
        #[cfg(not(feature = "redis"))]
        super::disabled::REDIS,
        #[cfg(feature = "postgres")]
        distsync_postgres::DRIVER,
        #[cfg(not(feature = "postgres"))]
        super::disabled::POSTGRES,
        #[cfg(feature = "zookeeper")]
        distsync_zookeeper::DRIVER,
        #[cfg(not(feature = "zookeeper"))]
        super::disabled::ZOOKEEPER,
        #[cfg(feature = "mysql")]
        distsync_mysql::DRIVER,
        #[cfg(not(feature = "mysql"))]
        super::disabled::MYSQL,
        #[cfg(feature = "nats")]
        distsync_nats::DRIVER,
        #[cfg(not(feature = "nats"))]
        super::disabled::NATS,
    ];
}

/// Connects to the store a URL names and returns a [`Coordinator`] over it.
///
/// `memory://` is always available and gives a fresh in-process store;
/// `memory://NAME` gives the process-wide store `NAME`, shared by every `connect` with
/// the same name (see [`store::memory::MemoryBackend::shared`]). `etcd://`,
/// `redis://` (also `rediss://`, `redis+sentinel://`, `redis+cluster://`),
/// `postgres://` (also `postgresql://`), `zk://` (also `zks://`), `mysql://` (also
/// `mariadb://`) and `nats://` (also `tls://`) need their cargo feature; without it the
/// error says which feature to enable. [`store::DRIVERS`] lists them.
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
    let driver = store::driver_for(url)?;
    (driver.connect)(url).await
}

/// The drivers of backends whose cargo feature is off: their schemes, answered with
/// [`Error::FeatureDisabled`]. Each is compiled only when its feature is off.
#[cfg(not(all(
    feature = "etcd",
    feature = "redis",
    feature = "postgres",
    feature = "zookeeper",
    feature = "mysql",
    feature = "nats"
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
    #[cfg(not(feature = "mysql"))]
    pub(crate) const MYSQL: Driver = Driver::new(
        "mysql",
        &["mysql", "mariadb"],
        |url| off(url, "mysql"),
        || Capabilities::none("mysql"),
    )
    .not_built();
    #[cfg(not(feature = "nats"))]
    pub(crate) const NATS: Driver = Driver::new(
        "nats",
        &["nats", "tls"],
        |url| off(url, "nats"),
        || Capabilities::none("nats"),
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
    // README's blocks show PostgreSQL's own calls (exactly-once effects): compiled with
    // the `postgres` feature, as CI's doctests are (every feature).
    #[cfg_attr(feature = "postgres", doc = include_str!("../README.md"))]
    struct Readme;
    #[doc = include_str!("../docs/ARCHITECTURE.md")]
    struct Architecture;
    #[doc = include_str!("../docs/BENCHMARKS.md")]
    struct Benchmarks;
    #[doc = include_str!("../docs/CONNECTING.md")]
    struct Connecting;
    #[cfg_attr(feature = "console", doc = include_str!("../docs/CONSOLE.md"))]
    struct Console;
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
