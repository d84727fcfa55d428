//! # distsync-etcd
//!
//! The etcd backend of distsync, and its reference implementation: every primitive is
//! built on etcd's v3 API exactly as etcd's Go `clientv3/concurrency` and `recipes`
//! packages build them, with the same key layouts and transactions, so a Go service
//! (or `etcdctl lock` / `etcdctl elect`) and a Rust service share one lock or one
//! election on the same etcd.
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **etcd**: rate limiter; queue age; outbox and exactly-once in the caller's transaction
//! <!-- gaps:end -->
//!
//! The primitives themselves live in [`distsync_kv::recipes`], written once over the
//! revisioned key-value model [`distsync_kv::kv::Kv`]; this crate provides [`EtcdKv`],
//! that model on the `etcd-client` crate, and [`EtcdBackend`], the [`Backend`] over it.
//!
//! - Sessions are etcd leases, renewed every TTL/3 by core's session loop, every renewal
//!   of a client on one shared keepalive stream (as Go's `clientv3`); a renewal that
//!   etcd answers with TTL 0 (the lease expired or was revoked) fires `lost()`.
//!   etcd grants no lease shorter than its minimum (2 s with default timing), which is
//!   [`Capabilities::min_session_ttl`].
//! - Fencing tokens are the create revision of the lock key (of the leader key for an
//!   election).
//! - Several endpoints may be given; requests are balanced over them and the backend
//!   keeps working while a minority of the members is down.
//! - TLS (rustls, cargo feature `tls`, on by default), etcd auth and timeouts: all in
//!   the URL (see [`EtcdConfig`], also for the role a user needs), e.g.
//!   `etcd://app:PASSWORD@10.0.0.1:2379/apps/billing?ca=/etc/etcd/ca.pem&cert=/etc/etcd/app.pem&key=/etc/etcd/app-key.pem`.
//!   The password is never shown in errors, logs or `Debug` output.
//! - **When the store forgets** (a wiped member, a new cluster at the same address, a
//!   restored snapshot), the client tells it from the cluster id and revision of every
//!   answer's header and from an epoch marker key `<namespace>/amnesia`: its sessions
//!   are lost, grants wait the longest session TTL known, and fencing tokens keep
//!   growing. `max_session_ttl=` in the URL (sessions above it refused; give it in
//!   every client's URL) makes a client that never knew the old store wait it out too,
//!   and the backend then declares `exclusive_across_restart`. See docs/FENCING.md,
//!   "When etcd, PostgreSQL or MySQL forgets".
//! - An application with its own configured [`etcd_client::Client`] hands it over with
//!   [`backend_from_client`].
//! - **An application's own transaction guarded by a lock**, for data kept in etcd:
//!   [`held_compare`] is the compare of Go's `Mutex.IsOwner()`, under which a `Txn` of
//!   the caller's applies only while the guard still holds the lock.
//! - **Sharing primitives with Go programs.** Locks and elections always use the keys
//!   of Go's `concurrency.Mutex` and `Election`. Read-write locks, queues, barriers,
//!   double barriers and STM keys use Go's `recipe.RWMutex`, `Queue`/`PriorityQueue`,
//!   `Barrier`, `DoubleBarrier` and `concurrency.STM` keys with the URL's `layout=go`
//!   ([`KeyLayout::Go`](distsync_kv::recipes::KeyLayout::Go), whose path is
//!   `distsync::store::raw::recipes::KeyLayout`), and distsync's own layout by default,
//!   in which distinct names never share a key (Go's layout cannot keep a lock `a` apart from an STM key
//!   `a/x`: Go's own recipes read every key under a name). Use the namespace the Go
//!   programs use (usually none). Both directions are tested against etcd's own Go
//!   code; docs/MIGRATING.md shows a migration from Go.
//!
//! [`Backend`]: distsync_core::Backend
//! [`Capabilities::min_session_ttl`]: distsync_core::Capabilities::min_session_ttl
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("etcd://127.0.0.1:2379").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // Key `jobs/nightly/<lease id in hex>`, as `etcdctl lock jobs/nightly` writes it.
//! println!("holding {} with fencing token {}", guard.key(), guard.token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use distsync_core::Capabilities;

mod backend;
mod config;
mod driver;
mod error;
mod guarded_txn;
mod keepalive;
mod key_value;
mod kv;
mod watch;

pub use backend::{backend, backend_from_client, backend_with_config, EtcdBackend};
pub use config::{EtcdConfig, DEFAULT_PORT, SCHEME};
pub use driver::DRIVER;
pub use guarded_txn::held_compare;
pub use kv::{EtcdKv, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};

/// Re-export of the client crate, for [`EtcdKv::from_client`] and [`EtcdKv::client`].
pub use etcd_client;

/// The backend's name, as it appears in [`Capabilities::backend`], in errors
/// ([`Error::Connection`] and the others name the backend) and in log fields.
///
/// [`Capabilities::backend`]: distsync_core::Capabilities::backend
/// [`Error::Connection`]: distsync_core::Error::Connection
pub const BACKEND: &str = "etcd";

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
/// - holds exclusive across a store that forgot (a wiped member, a new cluster at the
///   same address, a restored snapshot; `exclusive_across_restart`): only with a bound
///   on session TTLs (`max_session_ttl=`, [`capabilities_with_bound`]), which a client
///   that never knew the old store needs to wait out the lock-delay;
/// - linearizable: etcd's reads and transactions are, by default;
/// - no rate limiter: etcd has no clock a client can read in a transaction. Revisions
///   are ordered but carry no time, and a lease's remaining TTL is whole seconds and is
///   reset when the raft leader changes, so deciding on it would be neither exact nor
///   sound; a client's clock is what the limiter must never trust;
/// - no caller transactions: queue items are not enqueued or acknowledged in a
///   transaction of the caller's (a lock guards one: [`held_compare`]).
pub fn capabilities() -> Capabilities {
    capabilities_with_bound(None)
}

/// The largest value the etcd backend takes from a caller: 1 MiB. etcd refuses a
/// request above its `--max-request-bytes`, 1.5 MiB by default, and a write carries,
/// beside the value, its keys, its compares and the idempotency record of an enqueue;
/// 1 MiB leaves half a MiB for them. etcd does not tell a client its setting, so a
/// server started with a higher one is held to this figure too.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024;

/// [`capabilities`] of a backend whose URL bounds session TTLs (`max_session_ttl=`,
/// [`EtcdConfig::max_session_ttl`]): `exclusive_across_restart` with a bound.
pub fn capabilities_with_bound(max_session_ttl: Option<Duration>) -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(MAX_VALUE_SIZE)
        .with_rate_limiter(false)
        .with_queue_age(false)
        .with_exclusive_across_restart(max_session_ttl.is_some())
        .with_caller_transactions(false)
}
