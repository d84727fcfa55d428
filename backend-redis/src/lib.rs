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
//! `redis[s]://[user[:password]@]host[:port][/db][?namespace=prefix][&allow_eviction=true]`
//! `[&ca=PATH][&cert=PATH&key=PATH][&connect_timeout=5s][&timeout=10s]`, or
//! `redis+sentinel://...` and `redis+cluster://...` (see [`RedisConfig`]).
//! The namespace prefixes every key and defaults to `distsync:`; `?namespace=` gives
//! an empty one. `rediss://` is TLS through rustls (cargo feature `tls`, on by
//! default), with the CA file `ca` and the client certificate `cert`/`key`; the user
//! and password log in to an ACL user. The password never appears in errors, logs
//! or `Debug` output.
//!
//! ## Entry points
//!
//! As in every backend crate: [`backend`] (the [`RedisBackend`]) from a URL, which
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
//! * **Sessions.** A session id is a random 63-bit number drawn by the client (never
//!   a server counter, which a restart would reset), and the session key holds a
//!   random nonce only its owner knows; the session key and every key held through
//!   the session carry the session TTL as their PX, and a registry hash lists the
//!   held keys. The keepalive (every TTL/3) renews all of them in one round trip,
//!   provided the session key still holds the owner's nonce, and reports the session
//!   gone when its key is missing or holds another nonce, or a held key is missing or
//!   taken over, or when the key has less than the session's margin left of its TTL
//!   (the renewal then arrives after the owner's client-side deadline: nothing
//!   renews a session past it), releasing the rest at once. So after a restart that lost the state,
//!   every session opened before it reports `lost()` at its next renewal. Revoking (closing, or
//!   [`Backend::revoke_session`](distsync_core::Backend::revoke_session) from another
//!   connection) releases everything in one script, wakes the next waiters and tells
//!   the owner over pub/sub, so its `lost()` fires at once.
//! * **Locks, read-write locks, elections** are one waiter line of session-held
//!   entries (`src/waiter_line.rs`): FIFO, a waiting writer blocks later readers, fencing
//!   tokens from a counter incremented by the granting script, one wake-up per newly
//!   granted waiter on its own pub/sub channel (no thundering herd, no polling). A
//!   crashed waiter's or holder's entry expires with its session; waiters re-check when
//!   the current holders' TTL runs out, as a safety net for wake-ups that never come.
//!   Elections publish every change (new leader, no leader, proclaim) with a change
//!   number; observers apply them in order and re-read after a gap.
//! * **Unfair locks** ([`distsync_core::LockOptions::unfair`]) are one holder key beside
//!   the lock's waiter line (`src/unfair_lock.rs`): one script call takes a free lock and
//!   one lets it go, no line joined, no subscription; a release wakes only the head of a
//!   wait line of their own, which asks again and may lose to a newcomer. Tokens come
//!   from the lock's own counter, and fair and unfair lockers of one name exclude each
//!   other (an unfair contender waits behind the fair line).
//! * **Semaphores** are the same waiter line with permit entries: the first `N` live
//!   entries hold a permit, each grant with a fencing token; the count `N` is stored
//!   with the line while anyone holds or waits, and a joiner naming another count is
//!   refused.
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
//! client of the namespace gives and which refuses sessions with a longer TTL, a lock,
//! read-write lock, election or semaphore whose state the store forgot grants nothing
//! until that bound after the server started (the lock-delay; a server up for longer
//! waits for nothing), so the old holder's `lost()` always comes first, and its
//! fencing counter restarts above every token given before. A brand-new server makes
//! each name's first grant wait for the rest of the bound, once. What it cannot see: a
//! `FLUSHALL` on a server up for longer than the bound, and a replica promoted without
//! acknowledgement (use `wait_replicas`). Queue items and STM keys are data: only
//! persistence keeps them. See `src/amnesia.rs`.
//!
//! **Eviction.** A server that may evict keys (any `maxmemory-policy` but
//! `noeviction`) can delete held entries, waiter lines, counters and queue items, so
//! [`backend`] refuses it with [`distsync_core::Error::InvalidArgument`] naming the
//! setting and the fix, unless the URL says `allow_eviction=true`; the backend then
//! declares [`capabilities_under_eviction()`] (no `fencing`, no `fifo_waiters`; and
//! two holders of one lock become possible, which no flag expresses).
//!
//! ## Sentinel and replica acknowledgement
//!
//! `redis+sentinel://host:port[,host:port...]/service[/db]` asks the Sentinels for the
//! service's primary and follows it across a failover (`src/sentinel.rs`). Redis
//! replicates asynchronously: the replica the Sentinels promote may lack the last
//! writes the old primary acknowledged, so without more, a failover can lose a grant
//! (two holders of one lock), a renewal (a key expiring earlier on the new primary
//! than its holder's deadline), a fencing-counter increment (tokens going back) or a
//! queue item. Under Sentinel the backend therefore declares
//! [`capabilities_under_sentinel()`]: no `fencing` and no `survives_failover`, unless
//! the URL asks for **replica acknowledgement**, `wait_replicas=N` (and
//! `wait_timeout=T`, 500 ms by default): every script run (grant, re-check, release,
//! renewal, enqueue, dequeue, commit) is then followed on its connection by
//! `WAIT N T` (as Redisson's replica-sync check), and one that fewer than `N` replicas
//! acknowledged fails with a transient [`distsync_core::Error::Connection`] (it took
//! effect on the primary, so it is not retried blindly: a waiting acquisition
//! re-checks until a re-check is acknowledged, a renewal that was not acknowledged
//! does not extend the session, other calls report the error). With `N` at least 1
//! and the Sentinels promoting a replica that acknowledged (they pick the one with
//! the most replicated data among those they can reach), grants, renewals, tokens and
//! acknowledged queue items survive the failover: `fencing` and `survives_failover`
//! are declared. The price: one more round trip's worth of replication latency per
//! call, and no progress while fewer than `N` replicas are connected (with one
//! replica, until the old primary is back as a replica). Without acknowledgement,
//! `max_session_ttl=` keeps the holds (not the data) across a promotion: the grant
//! scripts tell a promoted replica by its replication id and wait out the bound
//! before granting what it may have forgotten, raising the fencing counter above
//! every earlier token (`src/amnesia.rs`, "Failovers"), so `fencing` is declared
//! again.
//!
//! ## Redis Cluster
//!
//! `redis+cluster://host:port[,host:port...]` (see [`RedisConfig`]) runs every
//! primitive on a Redis Cluster through redis-rs's cluster client, which sends each
//! call to the master of its slot and follows redirections and failovers
//! (`src/cluster.rs` has the details):
//!
//! * every call runs in its primitive's slot; a session key lives in a slot of its
//!   own, so under Cluster the client also lists what each session holds, and a renewal
//!   is one script call for the session key plus one per slot the session holds
//!   keys in, all sent at once (one round trip however many primitives it holds); the
//!   session counts as renewed only if every call renewed everything, and a hold
//!   found gone in one slot ends the session and releases the others at once;
//! * an entry joins with the client's own bound on what is left of the session (its
//!   client-side deadline plus the margin) as its TTL, since the script cannot read
//!   the session key: never longer than the session key lives;
//! * wake-ups go over `PUBLISH`, which the cluster delivers on every node; the
//!   backend subscribes on one node the URL names and moves to the next when it
//!   fails (every waiter then re-reads);
//! * replica acknowledgement (`wait_replicas`) runs `WAIT` on the master that ran the
//!   call, and the capabilities are [`capabilities_under_cluster()`]: as under
//!   Sentinel (a master's failover to its replica is a Sentinel failover for its
//!   slots), without `guarded_writes`: `LockGuard::put_if_held` checks a lock in one
//!   slot and writes an STM key in another, which no script may do, so it is
//!   [`distsync_core::Error::Unsupported`], as is a [`GuardedScript`] (the caller's
//!   keys are in other slots than the lock's); a lock break, a release request and a
//!   leadership hand-over read the one name's holder or candidates from its own slot
//!   ([`distsync_core::Backend::status_of`]) and work as on one server;
//! * `status` reports, migration exports and group member lists scan every master
//!   and check that the scan read every master the cluster had throughout (a failover
//!   or resharding during it gives a new scan, then a transient error, never a list
//!   short of a master's names), then read each hash slot with a script call of its
//!   own: a name present throughout the scan is listed, one created or removed during
//!   it may or may not be, and each primitive is read at one instant but the
//!   namespace as a whole is not.
//!
//! The session's registry lives in the session key's slot, so under Cluster it is
//! updated by a call of its own sent beside the one that takes or releases a key, and
//! a revoke (by the owner, or by id from any client) reads it and releases each key
//! with a call of its own before deleting the session key.
//!
//! Not claimed:
//! * `survives_restart`, unless the server fsyncs every write. Redis keeps its data in
//!   memory; at connect the backend reads the server's `appendonly`, `appendfsync` and
//!   `save` (`CONFIG GET`, or `INFO persistence` where `CONFIG` is refused, which
//!   leaves the fsync policy unknown), logs them, and exposes them as
//!   [`RedisBackend::persistence`]. Only `appendonly yes` with `appendfsync always`
//!   puts every acknowledged write on disk before its reply, and only then is
//!   `survives_restart` declared (on a server that does not evict keys): `everysec`
//!   loses up to a second of acknowledged grants, releases and queue items in a crash,
//!   RDB snapshots (`save`) everything since the last one. Under Sentinel the primary
//!   at connect is read, and a later primary is taken to share its configuration (one
//!   that does not, where `survives_restart` was declared, is logged as a warning);
//!   under Cluster every node the URL names is read and the weakest counts, the others
//!   taken to share it. Without it, a restart loses queues, barriers, STM keys,
//!   sessions and grants (fencing tokens still grow, see above), and a lock can be
//!   granted to a new client while its old holder still holds, until the old holder's
//!   next renewal (at most TTL/3 later) finds its session gone; the same holds for a
//!   Sentinel or Cluster failover without `wait_replicas`. `appendonly yes` with
//!   `appendfsync always` closes the first, `wait_replicas=1` the second.
//! * `linearizable: false` — one Redis server executes commands one at a time, so
//!   against a single server that never restarts, operations are linearizable. But a
//!   restart without persistence forgets acknowledged writes, and with replicas the
//!   replication is asynchronous: a failover loses acknowledged writes (including lock
//!   grants) too. Redis as deployed does not give that guarantee, so it is not claimed.
//! * Under a server restart without persistence, sessions vanish too: their owners'
//!   `lost()` fires at the next renewal.
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
