//! # distsync-zookeeper
//!
//! The Apache ZooKeeper backend of distsync, laid out as Apache Curator's recipes are,
//! so that a Rust service and a Java service using Curator share one lock during a
//! migration.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! let coordinator = distsync_zookeeper::connect("zk://127.0.0.1:2181").await?;
//! let session = coordinator.session().await?;
//! // Curator's InterProcessMutex on /distsync/lock/jobs/nightly is the same lock.
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // ... send guard.token() (the holder node's czxid) with every write ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! ## URL
//!
//! `zk://[user:password@]host:port[,host:port...][/root][?connect_timeout=5s&timeout=10s]`
//! (see [`ZkConfig`]). Every node lives under `root` (`/distsync` when the URL names
//! none); `user:password` is a digest login; `timeout` bounds each request. TLS
//! (`zks://`) is [`distsync_core::Error::Unsupported`]: the client crate's TLS needs
//! certificates in code rather than a URL, which this crate does not wire up yet.
//!
//! ## Entry points
//!
//! As in every backend crate: [`connect`] (a [`distsync_core::Coordinator`]) and
//! [`backend`] (the [`ZkBackend`]) from a URL; [`ZkBackend::connect`] from a
//! [`ZkConfig`] adjusted in code; [`capabilities()`], [`BACKEND`],
//! [`MIN_SESSION_TTL`] and [`DRIVER`].
//!
//! ## How it works
//!
//! * **Sessions** are ZooKeeper sessions, one client (connection) each, whose timeout
//!   is the session's TTL; `lost()` fires at the client-side deadline or as soon as
//!   the client sees the session expire (see `src/session.rs`).
//! * **The lock** is Curator's `InterProcessMutex` (see `src/lock.rs`): protected
//!   ephemeral sequential nodes, the lowest holds, each waiter watches the node before
//!   it, the fencing token is the holder node's creation zxid.
//! * **The semaphore** is Curator's `InterProcessSemaphoreV2` (see `src/semaphore.rs`):
//!   a mutex on `locks/` lines acquirers up, a permit is an ephemeral sequential lease
//!   under `leases/`, the head of the line waits while `leases/` has more children
//!   than permits; the token is the lease's creation zxid.
//! * **The read-write lock** is Curator's `InterProcessReadWriteLock` (see
//!   `src/rwlock.rs`): `__READ__` and `__WRIT__` contenders in one sequence; a reader
//!   waits only for writers before it, a writer for everyone before it.
//! * **The barrier** is Curator's `DistributedBarrier` (see `src/barrier.rs`): held
//!   while its persistent node exists; waiters watch it go.
//! * **The double barrier** is Curator's `DistributedDoubleBarrier` (see
//!   `src/double_barrier.rs`): an ephemeral child per participant and a `ready` node
//!   made by the participant that completes the count.
//! * **Purging a prefix** deletes the subtrees of its names, children first (see
//!   `src/purge.rs`).
//! * **Names** map to paths in `src/keys.rs`.
//!
//! Elections (`LeaderLatch`: its layout gives observers the latest value only, while
//! distsync's `observe()` promises every proclaim), queues and STM are not built
//! yet: each answers [`distsync_core::Error::Unsupported`], and
//! [`capabilities()`] says so.
//!
//! ## Why `zookeeper-client`
//!
//! Three Rust ZooKeeper clients exist. `zookeeper` (bonifaido) is synchronous, on a
//! thread per session with callbacks, and unmaintained; `zookeeper-async` is its
//! port to async and shares its age (no ZooKeeper 3.5+ requests such as `create2`,
//! which returns the created node's stat, hence its czxid, in the same reply).
//! `zookeeper-client` (kezhuw) is written for async Rust, maintained, covers the 3.5
//! to 3.9 request set (`create2`, `multi`, persistent watches), reports session state
//! changes as a stream, orders requests at call time (which makes a cleanup request
//! sent after a create see that create), and offers TLS and SASL. It runs on tokio
//! with its `tokio` feature (its tasks are spawned on the caller's runtime; its
//! sockets use async-io's own reactor thread), so every call of this crate needs a
//! tokio runtime, as distsync does anyway.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod barrier;
mod config;
mod double_barrier;
mod driver;
mod error;
mod facts;
mod keys;
mod lock;
mod purge;
mod rwlock;
mod semaphore;
mod session;
mod status;
mod store;

use std::time::Duration;

use distsync_core::{Capabilities, Coordinator, Result};

pub use backend::ZkBackend;
pub use config::{ZkConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_ROOT};
pub use driver::DRIVER;

/// The backend's name, as [`Capabilities::backend`] gives it.
pub const BACKEND: &str = "zookeeper";

/// The shortest session TTL: ZooKeeper's smallest session timeout is two server ticks
/// (`minSessionTimeout`), 1 s with a 500 ms `tickTime`; a server with the default
/// 2 s tick refuses TTLs below 4 s (the session is then refused with a typed error).
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// What this backend offers and claims, each measured by the conformance suite: the
/// lock, the semaphore, the read-write lock and the barriers, with fencing tokens, FIFO
/// waiters and `lost()` on the end of a session.
///
/// ZooKeeper expires a stalled holder's session after its timeout, and never before
/// the holder's client-side deadline (see `src/session.rs`): `stalled_holder_expires`
/// (paused child-process holders) and `partition_safe` (a holder cut off by the
/// partition proxy sees `lost()` before anyone else is granted). A restart keeps
/// nodes and sessions (the transaction log), but `exclusive_across_restart` and
/// `survives_restart` stay unclaimed: the rows that measure them need a queue or an
/// election, and a store that lost its data hands out zxids again from the start.
pub fn capabilities() -> Capabilities {
    Capabilities::none(BACKEND)
        .with_min_session_ttl(MIN_SESSION_TTL)
        .with_lock(true)
        .with_fencing(true)
        .with_fifo_waiters(true)
        .with_lost_notification(true)
        .with_stalled_holder_expires(true)
        .with_partition_safe(true)
        .with_semaphore(true)
        .with_rwlock(true)
        .with_barrier(true)
        .with_double_barrier(true)
}

/// Connects to the ZooKeeper servers a `zk://` URL names and returns a
/// [`Coordinator`] over them.
///
/// # Errors
/// [`distsync_core::Error::InvalidUrl`] for a bad URL (its password redacted),
/// [`distsync_core::Error::Unsupported`] for `zks://`, or [`ZkBackend::connect`]'s.
///
/// # Cancel safety
/// Dropping the future drops the half-made connection; nothing is held yet.
pub async fn connect(url: &str) -> Result<Coordinator> {
    Ok(Coordinator::new(backend(url).await?))
}

/// The [`ZkBackend`] for a `zk://` URL.
///
/// # Errors
/// As [`connect`].
///
/// # Cancel safety
/// As [`connect`].
pub async fn backend(url: &str) -> Result<ZkBackend> {
    ZkBackend::connect(url.parse()?).await
}
