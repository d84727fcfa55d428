//! # distsync-zookeeper
//!
//! The Apache ZooKeeper backend of distsync, laid out as Apache Curator's recipes are,
//! so that a Rust service and a Java service using Curator share one lock during a
//! migration.
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **zookeeper**: outbox and exactly-once in the caller's transaction
//! <!-- gaps:end -->
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("zk://127.0.0.1:2181").await?;
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
//! none); `user:password` is a digest login, or a SASL DIGEST-MD5 one with
//! `sasl=digest-md5`; `timeout` bounds each request. `zks://...?ca=ca.pem` connects
//! over TLS (rustls), with `cert=` and `key=` for a client certificate.
//!
//! `max_session_ttl=30s` bounds session TTLs (longer sessions are refused) and turns
//! on the lock-delay after the store forgets (below).
//!
//! ## Cargo features
//!
//! * `tls` (default): `zks://`, through the client crate's rustls; without it `zks://`
//!   is [`distsync_core::Error::Unsupported`].
//! * `sasl` (default): `sasl=digest-md5`; without it that option is
//!   [`distsync_core::Error::Unsupported`]. SASL GSSAPI (Kerberos) is unsupported.
//!
//! ## When the store forgets
//!
//! What a wiped data directory does to holds and tokens, and what `max_session_ttl=`
//! changes, is in docs/ZOOKEEPER.md, "When ZooKeeper forgets"; how the client tells it,
//! in `src/amnesia.rs`.
//!
//! ## Entry points
//!
//! As in every backend crate: [`backend()`] (the [`ZkBackend`]) from a URL, which
//! `distsync::connect` wraps in a [`distsync_core::Coordinator`]; [`backend_with_config`] from a
//! [`ZkConfig`] adjusted in code; [`capabilities()`] (and
//! [`capabilities_with_bound`]), [`BACKEND`],
//! [`MIN_SESSION_TTL`] and [`DRIVER`].
//!
//! ## How it works
//!
//! Each recipe is described where it is written, and its Curator layout in
//! docs/ZOOKEEPER.md:
//!
//! * **Sessions**: ZooKeeper sessions, one client each, whose timeout is the TTL
//!   (`src/session.rs`).
//! * **The lock**: Curator's `InterProcessMutex` (`src/lock.rs`).
//! * **The unfair lock** (`LockOptions::new().unfair()`): no Curator recipe, laid out
//!   so that fair contenders wait for it (`src/unfair_lock.rs`).
//! * **The semaphore**: Curator's `InterProcessSemaphoreV2` (`src/semaphore.rs`).
//! * **The read-write lock**: Curator's `InterProcessReadWriteLock` (`src/rwlock.rs`).
//! * **The barriers**: Curator's `DistributedBarrier` and `DistributedDoubleBarrier`
//!   (`src/barrier.rs`, `src/double_barrier.rs`).
//! * **The queue**: Curator's `DistributedPriorityQueue`, with `receive`'s holds under
//!   Curator's `lockPath` (`src/queue.rs`).
//! * **The election**: Curator's `LeaderLatch`, proclaims beside it (`src/election.rs`).
//! * **STM** (`src/stm.rs`): a persistent node per key, a commit is one `multi` of
//!   version checks and writes.
//! * **A caller's own `multi` guarded by a lock**: [`add_hold_check`] (or
//!   [`hold_check_writer`]) and [`hold_was_lost`] (`src/hold_check.rs`); the client
//!   crate is re-exported as [`zookeeper_client`].
//! * **Counters and latches** (`src/counter.rs`) and **the rate limiter**
//!   (`src/rate_limiter.rs`, on the leader's clock): one node each, changed by
//!   compare-and-swap on its version.
//! * **Export** (`src/export.rs`), **purging a prefix** (`src/purge.rs`) and **names**
//!   as paths (`src/keys.rs`).
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

mod amnesia;
mod backend;
mod barrier;
mod break_lock;
mod config;
mod counter;
mod direct;
mod double_barrier;
mod driver;
mod election;
mod epoch;
mod error;
mod export;
mod facts;
mod hold_check;
mod keys;
mod lock;
mod purge;
mod queue;
mod rate_limiter;
mod revoke;
mod rwlock;
mod semaphore;
mod session;
mod status;
mod stm;
mod store;
#[cfg(feature = "tls")]
mod tls;
mod unfair_lock;

use std::time::Duration;

use distsync_core::Capabilities;

pub use backend::{backend, backend_with_config, ZkBackend};
pub use config::{ZkConfig, DEFAULT_ROOT};
pub use driver::DRIVER;
pub use hold_check::{add_hold_check, hold_check_writer, hold_was_lost};

/// Re-export of the client crate, for the caller's own `multi` guarded by a lock
/// ([`add_hold_check`], [`hold_check_writer`]): its types at the version this backend
/// is built with.
pub use zookeeper_client;

/// The backend's name, as [`Capabilities::backend`] gives it.
pub const BACKEND: &str = "zookeeper";

/// The shortest session TTL: ZooKeeper's smallest session timeout is two server ticks
/// (`minSessionTimeout`), 1 s with a 500 ms `tickTime`; a server with the default
/// 2 s tick refuses TTLs below 4 s (the session is then refused with a typed error).
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// What this backend offers and claims, each measured by the conformance suite: the
/// lock (fair, and unfair: `unfair_lock`), the election, the semaphore, the read-write
/// lock and the barriers, with fencing tokens, FIFO waiters (of the fair lock) and
/// `lost()` on the end of a session.
///
/// STM at all four levels (`multi` with version checks; the serializable levels read
/// through `multiRead`), guarded writes, counters and latches are offered, and the rate
/// limiter, on the ZooKeeper leader's clock (a node's `mtime`; see
/// `src/rate_limiter.rs`).
///
/// ZooKeeper expires a stalled holder's session after its timeout, and never before
/// the holder's client-side deadline (see `src/session.rs`): `stalled_holder_expires`
/// (paused child-process holders) and `partition_safe` (a holder cut off by the
/// partition proxy sees `lost()` before anyone else is granted).
///
/// `survives_restart`: a server acknowledges a write only after its transaction log
/// is synced to disk (`forceSync=yes`, ZooKeeper's default; a server configured with
/// `forceSync=no` does not give this), so a restart keeps every node, queue item, STM
/// key and counter, and the sessions that were live. `exclusive_across_restart` (a
/// store that lost its data, a wiped data directory or a new ensemble at the same
/// address, forgets every holder and hands out zxids again from the start): only with
/// a bound on session TTLs (`max_session_ttl=`, [`capabilities_with_bound`]), which a
/// client that never knew the old store needs to wait out the lock-delay (see
/// "When the store forgets" in the crate docs); `session_bound`: the URL takes it.
///
/// The queue (`queue`, `priority_queue`, `reliable_delivery`, `queue_age`) keeps
/// Curator's order and holds items through the receiver's session; `queue_age` reads
/// items' `ctime`, the ZooKeeper leader's clock (see `src/queue.rs`).
///
/// `survives_failover`: an ensemble acknowledges a write only once a quorum has
/// logged it, and a new leader is elected among the members holding every
/// acknowledged write, so killing the leader loses nothing acknowledged; sessions ride
/// out the election (the client moves to another member within the session timeout)
/// and zxids keep growing (the new leader's epoch is higher).
pub fn capabilities() -> Capabilities {
    capabilities_with_bound(None)
}

/// The largest value the ZooKeeper backend takes from a caller: 960 KiB. A server
/// drops the connection of a client whose request is larger than its
/// `jute.maxbuffer` (0xfffff bytes, 1 MiB less one, by default), and a request carries,
/// beside the value, its node paths, ACLs, the queue's framing and the other
/// operations of a `multi`; 64 KiB is left for them. The server does not tell a
/// client its setting, so a server with a higher one is held to this figure too.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024 - 64 * 1024;

/// [`capabilities`] of a backend whose URL bounds session TTLs (`max_session_ttl=`,
/// [`ZkConfig::max_session_ttl`]): `exclusive_across_restart` with a bound.
pub fn capabilities_with_bound(max_session_ttl: Option<Duration>) -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(MAX_VALUE_SIZE)
        .with_exclusive_across_restart(max_session_ttl.is_some())
        .with_linearizable(false)
        .with_caller_transactions(false)
}
