//! # distsync-postgres
//!
//! The PostgreSQL backend of distsync, on `sqlx`: every primitive of
//! [`distsync_core`] over one database, addressed as
//! `postgres://user[:password]@host[:port]/database[?schema=name]` (also
//! `postgresql://`; default schema `distsync`).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! let coordinator = distsync_postgres::connect("postgres://app@db:5432/app?schema=locks").await?;
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! // ... pass guard.token() with every write to the protected resource ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # Connecting
//! TLS as libpq (`sslmode=require|verify-ca|verify-full`, `sslrootcert`, `sslcert`,
//! `sslkey`; rustls through sqlx, the cargo feature `tls`, on by default), SCRAM
//! passwords, `connect_timeout=` and `timeout=`: see [`PostgresConfig::parse`]. A wrong password
//! is [`Error::Authentication`](distsync_core::Error::Authentication); no password appears in errors, logs or `Debug`. In
//! code: [`backend_with_config`]; with a `sqlx::PgPool` of your own: [`backend_from_pool`]
//! (its requirements: session pooling, one role, durable commits).
//!
//! # How it works
//! Each part's design is documented in the prose of its module, private to the crate
//! (`backend-postgres/src/<module>.rs`, linked from `docs/ARCHITECTURE.md`):
//! - `schema`: tables and functions, created on first use, idempotently, in the
//!   configured schema, by an ordinary role (it needs `CREATE` on the database, or an
//!   existing schema it may create objects in). PostgreSQL 14 or later.
//! - `session`: a heartbeat row per session (random, never-repeating id); a session
//!   holds no connection. The keepalives of all the process's sessions are batched by
//!   one heartbeat task into `UPDATE ... WHERE id = ANY($1)` statements,
//!   each session keeping its own client-side deadline (`send time of its last
//!   acknowledged renewal + TTL − margin`) and `lost()`: its row gone or expired, a
//!   `NOTIFY` from the process that ended it, or its deadline passing.
//! - `hold`: locks, read-write locks and candidacies are entries in a line of rows per
//!   name (the semaphore's tables, a mutex being a semaphore of one permit, a read lock a
//!   shared entry): FIFO, granted by the caller's own statement, which bumps the name's
//!   fencing counter (the election term) durably. Waiters hold no connection and are
//!   woken one by one through `NOTIFY`. A dropped wait withdraws its entry.
//! - **Connections proportional to the process**: a backend uses at most 19
//!   connections (pool 8, holds 8, reaper 2, one listener) however many sessions,
//!   holds and waiters it has: 10,000 held locks and 1,000 waiters from one process
//!   measure at that (see docs/BENCHMARKS.md).
//! - **The lease gate** (`hold`): *an entry counts until its session's row is deleted
//!   or expires* (`expires_at` = the server's time of its last renewal + TTL, never
//!   earlier than the holder's client-side deadline), so a holder that vanished without
//!   a release (crashed, partitioned, stalled, declared lost) is granted to the next
//!   waiter only once it can no longer believe it holds; *a clean release (`unlock()`,
//!   `resign()`, a dropped guard, `close()` of a healthy session) hands over at once*.
//!   This applies to locks, write locks, read locks, leadership, permits and
//!   double-barrier entries. The crash-release time is bound by the TTL, as on etcd
//!   and Redis. A connection's death frees nothing.
//! - **TTL enforcement** (`hold`): a stalled holder stops renewing, so its row expires
//!   after its TTL and the next waiter is granted then; no backend is ever terminated.
//!   Keepalives sweep expired rows, unused names and old election log entries (bounded
//!   growth, see `limits`) on the reaper's connections.
//! - `semaphore`: a line of entry rows per name, the first `N` live ones holding a
//!   permit, each grant bumping the name's fencing counter; waiters hold no connection
//!   and are woken one by one (`NOTIFY` to the waiter a release lets in); entries count
//!   until their session's row is deleted or expires, which is the lease gate.
//! - `election`: a candidacy in the election's line plus a leader row and a bounded
//!   log; `observe()` follows the log through `LISTEN`/`NOTIFY` and never yields a stale
//!   leader.
//! - `queue`: rows claimed with `DELETE ... FOR UPDATE SKIP LOCKED ... RETURNING`,
//!   cancel-safe; `barrier` and `double_barrier` on rows. Waiters are woken through
//!   one listening connection per backend (`notify`) and ride out connection trouble
//!   (`retry`).
//! - `export`: the durable state, read in one snapshot for migration between backends.
//! - `stm`: PostgreSQL transactions over a key-value table:
//!
//! | etcd level | PostgreSQL |
//! |---|---|
//! | `SerializableSnapshot` | `SERIALIZABLE` |
//! | `Serializable` | `SERIALIZABLE` |
//! | `RepeatableReads` | `REPEATABLE READ`, with the keys read or written locked `FOR UPDATE` at commit and the keys read as absent validated (etcd's semantics, see `stm`) |
//! | `ReadCommitted` | `READ COMMITTED` (lost updates possible, as on etcd) |
//!
//! # Connection poolers
//! Holds are rows, so statements may run on any server connection, but waiters are
//! woken through `LISTEN`, which belongs to a server connection. Behind PgBouncer or
//! another pooler, use **session pooling**: a transaction (or statement) pooler is
//! detected at connect and refused with [`Error::Unsupported`](distsync_core::Error::Unsupported) naming the mode
//! (`checks`). No startup parameter other than `application_name` is sent (PgBouncer
//! rejects `options`): settings are applied after connecting (`conn`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod barrier;
mod bounded;
mod checks;
mod config;
mod conn;
mod double_barrier;
mod election;
mod error;
mod export;
pub mod fence;
mod guarded;
mod heartbeat;
mod hold;
mod limits;
mod liveness;
mod lock;
mod notify;
mod queue;
mod retry;
mod reused;
mod rwlock;
mod schema;
mod semaphore;
mod session;
mod status;
mod stm;
mod store;
mod tls;
mod unflushed;

pub use backend::{backend, backend_from_pool, backend_with_config, connect, PostgresBackend};
pub use config::{
    PostgresConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOLD_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SCHEMA, MAX_HOLD_CONNECTIONS,
};
pub use limits::Limits;
pub use queue::STALE_CLAIM;
/// The `sqlx` this crate is built with, for [`backend_from_pool`] (its `PgPool` and
/// `PgConnectOptions` must come from this version).
pub use sqlx;

use std::time::Duration;

use distsync_core::Capabilities;

/// The backend's short name, as it appears in errors, logs and [`Capabilities`].
pub const BACKEND: &str = "postgres";

/// The shortest session TTL this backend accepts ([`Capabilities::min_session_ttl`];
/// a shorter one is refused with
/// [`Error::InvalidArgument`](distsync_core::Error::InvalidArgument) when the session
/// is opened): renewals are batched statements on the reaper's connections and a
/// session's row must outlive a renewal's round trip and a durable commit.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// What the PostgreSQL backend offers and claims: every primitive and every STM level,
/// and
/// - `fencing`: counter rows bumped by the granting statement, committed with
///   `synchronous_commit = on`, so tokens never go backwards across a crash or an
///   immediate shutdown of the server (only releases and waits that grant nothing
///   commit asynchronously, see `hold`);
/// - `fifo_waiters`: entries in arrival order (see `hold`);
/// - `lost_notification`: a gone or expired heartbeat row, or a `NOTIFY` from the
///   process that ended the session;
/// - `partition_safe`: the lease gate: a hold left without a clean release (its
///   process died or was partitioned away) is granted to the next waiter only once the
///   previous holder's session has expired in the store, which is never
///   earlier than the holder's client-side deadline; a clean release hands over at once
///   (see the crate docs). Measured by the partition cases;
/// - `semaphore`: entry rows per name, the first N live ones hold (see `semaphore`);
/// - `guarded_writes`: `LockGuard::put_if_held` (locks, write locks, permits) writes the
///   STM key in one statement that first checks, under the name's row lock that every
///   grant takes, that the guard's entry is still there with its token, its session
///   live and it first in line; a stale holder writes nothing. To enforce tokens at a
///   table of your own, see [`fence::admit`];
/// - `reliable_delivery`: `Queue::receive` marks the item's row as held by the
///   session; the hold counts only while the session's row is live, so a consumer
///   that dies loses nothing: its items come back at their place when its session
///   expires or ends (see `queue`);
/// - `stm_repeatable_reads`: keys read as absent are validated too, as on etcd;
/// - `stalled_holder_expires`: a stalled holder's row expires after its TTL and its
///   entry stops counting (no backend is terminated); keepalives sweep expired rows;
/// - `survives_restart`: queues, STM keys, barriers, fencing counters, sessions and
///   their holds are tables (a session survives a restart shorter than its deadline);
/// - `linearizable`: one primary serves every read and grant (with replicas, point the
///   URL at the primary);
/// - `min_session_ttl`: [`MIN_SESSION_TTL`], 1 s;
/// - `survives_failover`: false here; a [`PostgresBackend`] connected to a primary whose
///   `synchronous_standby_names` is set declares it true (checked at connect): every
///   commit then waits for the standby, so a promoted standby has every grant, token
///   and acknowledged item (measured by the matrix row `server_primary_failover_postgres`
///   on a private primary with a synchronous standby).
pub fn capabilities() -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        // `guarded_put`: the write commits only while the guard's entry is a current
        // grant (see the guarded-write module).
        .with_guarded_writes(true)
        // `Queue::receive`: a hold on the item's row, counting while the session's row
        // is live (see the queue module).
        .with_reliable_delivery(true)
        // No synchronous standby assumed: a failover to an asynchronous streaming
        // standby can lose what the primary acknowledged last
        // (docs/HIGH_AVAILABILITY.md). A backend connected to a primary that names a
        // synchronous standby declares it (see `PostgresBackend`'s capabilities).
        .with_survives_failover(false)
}
