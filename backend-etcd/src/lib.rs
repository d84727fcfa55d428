//! # distsync-etcd
//!
//! The etcd backend of distsync, and its reference implementation: every primitive is
//! built on etcd's v3 API exactly as etcd's Go `clientv3/concurrency` and `recipes`
//! packages build them, with the same key layouts and transactions, so a Go service
//! (or `etcdctl lock` / `etcdctl elect`) and a Rust service share one lock or one
//! election on the same etcd.
//!
//! The primitives themselves live in [`distsync_core::recipes`], written once over the
//! revisioned key-value model [`distsync_core::kv::Kv`]; this crate provides [`EtcdKv`],
//! that model on the `etcd-client` crate, and [`EtcdBackend`], the [`Backend`] over it.
//!
//! - Sessions are etcd leases, renewed every TTL/3 by core's session loop; a renewal
//!   that etcd answers with TTL 0 (the lease expired or was revoked) fires `lost()`.
//!   etcd grants no lease shorter than its minimum (2 s with default timing), which is
//!   [`Capabilities::min_session_ttl`].
//! - Fencing tokens are the create revision of the lock key (of the leader key for an
//!   election).
//! - Several endpoints may be given; requests are balanced over them and the backend
//!   keeps working while a minority of the members is down.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! let coordinator = distsync_etcd::connect("etcd://127.0.0.1:2379").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // Key `jobs/nightly/<lease id in hex>`, as `etcdctl lock jobs/nightly` writes it.
//! println!("holding {} with fencing token {}", guard.key(), guard.token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::time::Duration;

use distsync_core::recipes::KvBackend;
use distsync_core::{Backend, Capabilities, Coordinator, Result};

mod config;
mod error;
mod kv;
mod retry;
mod watch;

pub use config::{EtcdConfig, DEFAULT_PORT, SCHEME};
pub use kv::{EtcdKv, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};

/// Re-export of the client crate, for [`EtcdKv::from_client`] and [`EtcdKv::client`].
pub use etcd_client;

/// The etcd backend: every primitive of [`distsync_core::recipes`] over [`EtcdKv`].
pub type EtcdBackend = KvBackend<EtcdKv>;

/// The shortest lease etcd grants with its default timing (`--heartbeat-interval`
/// 100 ms, `--election-timeout` 1000 ms): 1.5 election timeouts, rounded up to whole
/// seconds. Asked for 1 s, etcd 3.4 grants 2 s.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(2);

/// What the etcd backend offers: every primitive and STM level, and every guarantee.
///
/// - fencing: create revisions strictly increase;
/// - FIFO waiters: each waiter watches the key created just before its own;
/// - lost notification and stalled holders expiring: leases;
/// - surviving a restart: etcd's state is on disk (raft log and snapshots);
/// - linearizable: etcd's reads and transactions are, by default.
pub fn capabilities() -> Capabilities {
    Capabilities::all(error::BACKEND, MIN_SESSION_TTL)
}

/// Connects to the etcd cluster a URL names and returns the backend.
///
/// URL: `etcd://host:port[,host:port...][/namespace]` (see [`EtcdConfig`]). The
/// namespace prefixes every key; leave it out to share locks and elections with
/// `etcdctl lock NAME` / `etcdctl elect NAME` and Go programs that use no namespace.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// [`distsync_core::Error::InvalidUrl`] for a malformed URL,
/// [`distsync_core::Error::Connection`] when no member answers.
pub async fn backend(url: &str) -> Result<EtcdBackend> {
    let config = EtcdConfig::parse(url)?;
    backend_with_config(&config).await
}

/// Like [`backend`], from an already parsed configuration.
///
/// # Errors
/// [`distsync_core::Error::Connection`] when no member answers.
pub async fn backend_with_config(config: &EtcdConfig) -> Result<EtcdBackend> {
    let kv = EtcdKv::connect(config.endpoints()).await?;
    tracing::debug!(backend = error::BACKEND, %config, "connected");
    Ok(KvBackend::with_kv(kv, config.namespace(), capabilities()))
}

/// Connects to the etcd cluster a URL names (see [`backend`]) and returns a
/// [`Coordinator`] over it. This is what `distsync::connect("etcd://…")` calls.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// As [`backend`].
pub async fn connect(url: &str) -> Result<Coordinator> {
    let backend = backend(url).await?;
    Ok(Coordinator::new(backend))
}

/// Checks at compile time that the backend is a [`Backend`].
const _: fn() = || {
    fn is_backend<B: Backend>() {}
    is_backend::<EtcdBackend>();
};
