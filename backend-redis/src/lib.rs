//! # distsync-redis
//!
//! The Redis backend of distsync: every primitive of [`distsync_core`] — lock,
//! election, read-write lock, semaphore, FIFO and priority queue, barrier, double
//! barrier, STM — on a Redis server, a Sentinel-watched primary or a Redis Cluster,
//! through the `redis` crate (a multiplexed connection that reconnects, plus one
//! pub/sub connection for wake-ups).
//!
//! ## What it does not offer
//!
//! Each of these answers [`distsync_core::Error::Unsupported`], as the backend's
//! capabilities declare, one list item for each column of the guarantee matrix this
//! backend runs (generated from the capabilities by `scripts/update-matrix.sh`, and
//! checked in CI):
//!
//! <!-- gaps:begin -->
//! - **redis**: outbox and exactly-once in the caller's transaction
//! - **redis-sentinel**: outbox and exactly-once in the caller's transaction
//! - **redis-cluster**: outbox and exactly-once in the caller's transaction; writes guarded
//!   by a hold (`put_if_held`, guarded scripts)
//! <!-- gaps:end -->
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("redis://127.0.0.1:6379/0?namespace=myapp:").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // ... send guard.token() with every write to the protected resource ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! ## URL
//!
//! `redis[s]://[user[:password]@]host[:port][/db][?namespace=prefix&...]`, or
//! `redis+sentinel://...` and `redis+cluster://...`: [`RedisConfig`] lists the
//! parameters. The password never appears in errors, logs or `Debug` output.
//!
//! ## Entry points
//!
//! As in every backend crate: [`backend()`] (the [`RedisBackend`]) from a URL, which
//! `distsync::connect` wraps in a [`distsync_core::Coordinator`]; [`backend_with_config`] from a
//! [`RedisConfig`] parsed from one (`url.parse::<RedisConfig>()`) and adjusted in
//! code; [`capabilities()`], [`BACKEND`] and [`MIN_SESSION_TTL`]. An application that
//! already has a configured [`redis::Client`] hands it over with
//! [`backend_from_client`] and [`RedisOptions`]. A write of the application's own
//! Redis keys that must happen only while a lock is held is a [`GuardedScript`]: the
//! application's Lua, run by the server after checking the hold, in one script.
//!
//! ## How it works
//!
//! * **One script per step.** Every grant, release, renewal and commit is one Lua
//!   script (`EVALSHA`, one round trip), so it is atomic on the server.
//! * **Hash tags.** The keys of one primitive share the hash tag `{<namespace><name>}`
//!   (all STM keys share `{<namespace>stm}`), so each primitive lives in one Redis
//!   Cluster slot, and every script call declares a key of the primitive it works on
//!   (see "Redis Cluster" below for what differs there).
//! * **Sessions** (`src/session.rs`). A session is a key under a random 63-bit id
//!   drawn by the client (never a server counter, which a restart would reset), holding
//!   a nonce only its owner knows; it and every key held through it carry the session
//!   TTL. One keepalive script (every TTL/3) renews them all, or reports the session
//!   gone and releases the rest, so after a restart that lost the state every session
//!   reports `lost()` at its next renewal. Revoking (closing, or
//!   [`Backend::revoke_session`](distsync_core::Backend::revoke_session)) releases
//!   everything in one script and tells the owner over pub/sub: its `lost()` fires at
//!   once.
//! * **Locks, read-write locks, elections and semaphores** are one waiter line of
//!   session-held entries (`src/waiter_line.rs`): FIFO, a waiting writer blocks later
//!   readers, fencing tokens from a counter incremented by the granting script, one
//!   wake-up per newly granted waiter on its own channel (no thundering herd, no
//!   polling), and a re-check when the holders' TTL runs out as a safety net. A
//!   semaphore's first `N` live entries hold a permit. Elections publish every change
//!   with a change number (`src/election.rs`).
//! * **Unfair locks** ([`distsync_core::LockOptions::unfair`]) are one holder key beside
//!   the lock's waiter line (`src/unfair_lock.rs`): one script call takes a free lock and
//!   one lets it go; a release wakes only the head of their own wait line, which may
//!   lose to a newcomer. Fair and unfair lockers of one name share the token counter
//!   and exclude each other.
//! * **Queues** are one sorted set per queue (priority, then arrival); a dequeue parks
//!   its item under its call id until it has returned it, so a cancelled dequeue puts
//!   it back (`src/queue.rs` explains the blocking side).
//! * **Barriers** are a key plus a channel; **double barriers** count session-held
//!   participant entries.
//! * **STM** keeps a mod revision per key and commits by one compare-and-apply script,
//!   at all four of etcd's isolation levels (see `src/stm.rs`).
//! * **Waiting** uses one shared pub/sub connection; after it reconnects every
//!   waiter re-reads, since messages may have been missed.
//!
//! The modules document each part's layout and protocol, in their source files
//! (`src/*.rs`: `waiter_line.rs`, `unfair_lock.rs`, `session.rs`, `notify.rs`, `queue.rs`, `barrier.rs`,
//! `double_barrier.rs`, `election.rs`, `stm.rs`, `keys.rs`, `export.rs`, `status.rs`,
//! `target.rs`, `sentinel.rs`, `cluster.rs`, `amnesia.rs`); `docs/ARCHITECTURE.md` places
//! the main ones in the whole.
//!
//! ## Guarantees ([`capabilities()`])
//!
//! Offered: every primitive, all four STM levels, fencing, FIFO waiters, `lost()` when
//! the store ends a session, and expiry of a stalled holder after its TTL (keys carry
//! PX TTLs that only the holder's keepalive renews).
//!
//! **Fencing across restarts.** A fencing-token counter (and an election's change
//! counter) that does not exist, because it was never used, expired after an hour
//! without holders or waiters, or was lost in a restart without persistence or a
//! failover, is first set to the server's clock in microseconds since the Unix
//! epoch, then incremented (`counter_next` in `lua/lib.lua`). So tokens keep growing
//! across such a loss, provided a name is granted less than once per microsecond on
//! average (a grant takes a release and an acquire, each a script run) and the
//! server's clock does not go back (after a failover: the new primary's clock is not
//! behind the old one's by more than the time the failover took). Tokens are
//! therefore large numbers (about 1.8 × 10¹⁵ in 2026), below 2⁵³ until the year 2255.
//!
//! **When the store forgets.** A restart without persistence empties the store while
//! the old holder still believes it holds until its next renewal. With a bound on
//! session TTLs (`max_session_ttl=` in the URL, [`RedisOptions::max_session_ttl`];
//! [`DEFAULT_MAX_SESSION_TTL`] by default on a server that does not fsync every write
//! or fails over without `wait_replicas`, `max_session_ttl=off` for none), which every
//! client of the namespace gives and which refuses longer session TTLs, a lock,
//! read-write lock, election or semaphore whose state the store forgot grants nothing
//! until that bound after the server started (the lock-delay), so the old holder's
//! `lost()` always comes first, and its fencing counter restarts above every token
//! given before. What it cannot see: a `FLUSHALL` on a server up for longer than the
//! bound, and a replica promoted without acknowledgement (use `wait_replicas`). Queue
//! items and STM keys are data: only persistence keeps them. See `src/amnesia.rs`.
//!
//! **Eviction.** A server that may evict keys (any `maxmemory-policy` but
//! `noeviction`) can delete held entries, waiter lines, counters and queue items, so
//! [`backend()`] refuses it unless the URL says `allow_eviction=true` (see
//! [`RedisConfig`]); the backend then declares [`capabilities_under_eviction()`].
//!
//! ## Sentinel and replica acknowledgement
//!
//! `redis+sentinel://host:port[,host:port...]/service[/db]` asks the Sentinels for the
//! service's primary and follows it across a failover (`src/sentinel.rs`). Redis
//! replicates asynchronously: the promoted replica may lack the last writes the old
//! primary acknowledged, so a failover can lose a grant (two holders of one lock), a
//! renewal, a fencing-counter increment (tokens going back) or a queue item. Under
//! Sentinel the backend therefore declares [`capabilities_under_sentinel()`]: no
//! `fencing` and no `survives_failover`, unless the URL asks for **replica
//! acknowledgement**, `wait_replicas=N` (and `wait_timeout=T`, 500 ms by default):
//! every script run is then followed on its connection by `WAIT N T` (as Redisson's
//! replica-sync check), and one that fewer than `N` replicas acknowledged fails with a
//! transient [`distsync_core::Error::Connection`] (it took effect on the primary, so it
//! is not retried blindly: a waiting acquisition re-checks until a re-check is
//! acknowledged, an unacknowledged renewal does not extend the session, other calls
//! report the error). With `N` at least 1, and the Sentinels promoting a replica that
//! acknowledged, grants, renewals, tokens and acknowledged queue items survive the
//! failover: `fencing` and `survives_failover` are declared. The price: a replication
//! round trip per call, and no progress while fewer than `N` replicas are connected.
//! Without acknowledgement, `max_session_ttl=` keeps the holds (not the data) across a
//! promotion (`src/amnesia.rs`, "Failovers"), so `fencing` is declared again.
//! `docs/HIGH_AVAILABILITY.md` has the measurements and the settings to tune.
//!
//! ## Redis Cluster
//!
//! `redis+cluster://host:port[,host:port...]` (see [`RedisConfig`]) runs every
//! primitive on a Redis Cluster through redis-rs's cluster client, which sends each
//! call to the master of its slot and follows redirections and failovers.
//! `src/cluster.rs` says what runs where: every call runs in its primitive's slot; a
//! session key lives in a slot of its own, so the client also lists what each session
//! holds, and a renewal is one script call per slot, all sent at once; wake-ups go over
//! `PUBLISH`, which the cluster delivers on every node. The capabilities are
//! [`capabilities_under_cluster()`]: as under Sentinel, without `guarded_writes`
//! (`LockGuard::put_if_held` and a [`GuardedScript`] would span two slots, which no
//! script may do, so they are [`distsync_core::Error::Unsupported`]). `status` reports,
//! migration exports and group member lists scan every master and read each slot with
//! a script call of its own: each primitive is read at one instant but the namespace
//! as a whole is not.
//!
//! Not claimed:
//! * `survives_restart`, unless the server fsyncs every write: at connect the backend
//!   reads the server's persistence settings, logs them and exposes them as
//!   [`RedisBackend::persistence`]; only `appendonly yes` with `appendfsync always`
//!   declares it (see [`Persistence`]). Under Sentinel the primary at connect is read,
//!   and a later one is taken to share its configuration; under Cluster every node the
//!   URL names is read and the weakest counts. Without it, a restart loses queues,
//!   barriers, STM keys, sessions and grants (fencing tokens still grow, see above),
//!   and a lock can be granted to a new client while its old holder still holds, until
//!   the old holder's next renewal (at most TTL/3 later); the same holds for a failover
//!   without `wait_replicas`.
//! * `linearizable: false` — one Redis server executes commands one at a time, but a
//!   restart without persistence forgets acknowledged writes, and a failover of
//!   asynchronously replicated servers loses acknowledged writes (lock grants
//!   included): Redis as deployed does not give that guarantee.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod amnesia;
mod backend;
mod barrier;
mod call;
mod capabilities;
mod cluster;
mod config;
mod counter;
mod double_barrier;
mod driver;
mod election;
mod error;
mod eviction;
mod export;
mod facts;
mod guarded;
mod guarded_script;
mod hold;
mod info;
mod keys;
mod lock;
mod name_status;
mod notify;
mod options;
mod persistence;
mod promotion_record;
mod purge;
mod queue;
mod random;
mod rate_limiter;
mod rwlock;
mod scan;
mod scripts;
mod semaphore;
mod sentinel;
mod session;
mod status;
mod stm;
mod store;
mod target;
#[cfg(feature = "tls")]
mod tls;
mod unfair_lock;
mod waiter_line;
mod waiting;

pub use crate::backend::{backend, backend_from_client, backend_with_config, RedisBackend};
pub use crate::capabilities::{
    capabilities, capabilities_under_cluster, capabilities_under_eviction,
    capabilities_under_sentinel, BACKEND, MAX_VALUE_SIZE, MIN_SESSION_TTL,
};
pub use crate::config::{RedisConfig, DEFAULT_NAMESPACE};
pub use crate::driver::DRIVER;
pub use crate::guarded_script::GuardedScript;
pub use crate::options::{
    RedisOptions, DEFAULT_MAX_SESSION_TTL, DEFAULT_WAIT_TIMEOUT, MAX_SESSION_TTL_LIMIT,
};
pub use crate::persistence::Persistence;
pub use crate::scripts::script_source;

/// Re-export of the client crate, for [`backend_from_client`].
pub use redis;
