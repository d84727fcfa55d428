//! # distsync
//!
//! Distributed concurrency primitives — lock, leader election, read-write lock, FIFO
//! and priority queue, barrier and double barrier, software transactional memory —
//! behind one set of traits, over etcd, Redis, PostgreSQL or an in-process memory
//! store. Pick the store with a cargo feature and a URL, write the code once:
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
//! | URL | cargo feature | backend crate |
//! |---|---|---|
//! | `memory://` (fresh) or `memory://NAME` (shared in the process) | (always) | [`memory`] |
//! | `etcd://host:port[,host:port...][/namespace]` | `etcd` | `distsync-etcd` |
//! | `etcd://user:password@host:port[,...][/namespace]?tls=true&ca=PATH&cert=PATH&key=PATH` | `etcd` | `distsync-etcd` |
//! | `redis://host:port[/db][?namespace=...][&allow_eviction=true]` (a server must run `maxmemory-policy noeviction` unless `allow_eviction=true`, which declares the guarantees lost) | `redis` | `distsync-redis` |
//! | `rediss://user:password@host:port[/db]?ca=PATH&cert=PATH&key=PATH[&namespace=...]` | `redis` | `distsync-redis` |
//! | `redis+sentinel://host:port[,host:port...]/service[/db][?wait_replicas=1&wait_timeout=500]` (the primary found through Sentinels; `wait_replicas` makes grants survive a failover) | `redis` | `distsync-redis` |
//! | `postgres://user@host:port/db[?schema=...]` | `postgres` | `distsync-postgres` |
//!
//! etcd and Redis URLs also take `connect_timeout=` and `timeout=`; see
//! `docs/CONNECTING.md`. Print URLs with [`redact_url`]: it masks passwords.
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
    LeaderInfo, Leadership, LockGuard, Lost, Name, ReadGuard, Result, Session, SessionHealth,
    SessionId, SessionOptions, DEFAULT_TTL,
};

// The primitives.
pub use distsync_core::{
    Barrier, Delivery, DoubleBarrier, Election, Locker, MultiLockGuard, MultiLocker, Queue, RwLock,
    Semaphore, DEFAULT_PRIORITY,
};

// Software transactional memory.
pub use distsync_core::{Committed, Isolation, Stm, StmOptions, StmTx};

/// The in-memory backend, for tests: `Coordinator::new(MemoryBackend::new())`.
pub use distsync_core::memory::MemoryBackend;

// The in-memory backend (`memory://`), observability, migration between stores, who
// holds what, the notes on timed acquisition, and the backend author's API.
pub use distsync_core::{fence, instrument, memory, migrate, raw, status, timeout};

// Who holds what ([`Coordinator::status`]).
pub use distsync_core::status::{
    DoubleBarrierStatus, HoldMode, HoldStatus, LeaderStatus, LineKind, LineStatus, QueueStatus,
    StatusReport,
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

/// Connects to the store a URL names and returns a [`Coordinator`] over it.
///
/// `memory://` is always available and gives a fresh in-process store;
/// `memory://NAME` gives the process-wide store `NAME`, shared by every `connect` with
/// the same name (see [`memory::MemoryBackend::shared`]). `etcd://`,
/// `redis://` (also `rediss://`) and `postgres://` (also `postgresql://`) need their
/// cargo feature; without it the error says which feature to enable.
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
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::InvalidUrl {
            url: redact_url(url),
            reason: "expected <scheme>://..., e.g. memory:// or etcd://127.0.0.1:2379".into(),
        });
    };
    match scheme.to_ascii_lowercase().as_str() {
        "memory" => memory::connect(url).await,
        "etcd" => connect_etcd(url).await,
        "redis" | "rediss" | "redis+sentinel" | "redis+cluster" | "rediss+cluster" => {
            connect_redis(url).await
        }
        "postgres" | "postgresql" => connect_postgres(url).await,
        other => Err(Error::InvalidUrl {
            url: redact_url(url),
            reason: format!("unknown scheme `{other}`; expected memory, etcd, redis or postgres"),
        }),
    }
}

#[cfg(feature = "etcd")]
async fn connect_etcd(url: &str) -> Result<Coordinator> {
    distsync_etcd::connect(url).await
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_url: &str) -> Result<Coordinator> {
    Err(Error::FeatureDisabled {
        scheme: "etcd".into(),
        feature: "etcd",
    })
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<Coordinator> {
    // Boxed and type-erased: Sentinel discovery makes this future nest deeper than
    // the compiler's default query depth in every crate that awaits `connect`.
    let connect: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Coordinator>> + Send + '_>,
    > = Box::pin(distsync_redis::connect(url));
    connect.await
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(_url: &str) -> Result<Coordinator> {
    Err(Error::FeatureDisabled {
        scheme: "redis".into(),
        feature: "redis",
    })
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> Result<Coordinator> {
    distsync_postgres::connect(url).await
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_url: &str) -> Result<Coordinator> {
    Err(Error::FeatureDisabled {
        scheme: "postgres".into(),
        feature: "postgres",
    })
}
