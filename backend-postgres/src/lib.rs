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
//! is [`Error::Authentication`]; no password appears in errors, logs or `Debug`. In
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
//! detected at connect and refused with [`Error::Unsupported`] naming the mode
//! (`checks`). No startup parameter other than `application_name` is sent (PgBouncer
//! rejects `options`): settings are applied after connecting (`conn`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod barrier;
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
mod lock;
mod notify;
mod queue;
mod retry;
mod rwlock;
mod schema;
mod semaphore;
mod session;
mod shared;
mod status;
mod stm;
mod tls;

pub use config::{
    PostgresConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SCHEMA,
};
pub use queue::STALE_CLAIM;
/// The `sqlx` this crate is built with, for [`backend_from_pool`] (its `PgPool` and
/// `PgConnectOptions` must come from this version).
pub use sqlx;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::migrate::Snapshot;
use distsync_core::{
    Backend, Barrier, Capabilities, Coordinator, DoubleBarrier, Election, Error, Locker, Name,
    Queue, Result, RwLock, Session, SessionId, SessionOptions, Stm,
};
use sqlx::postgres::PgPoolOptions;

use crate::error::map;
pub use crate::limits::Limits;
use crate::session::{LeaseInner, PgLease};
use crate::shared::Shared;

/// The backend's short name, as it appears in errors, logs and [`Capabilities`].
pub const BACKEND: &str = "postgres";

/// The shortest session TTL this backend accepts ([`Capabilities::min_session_ttl`];
/// a shorter one is refused with [`Error::InvalidArgument`] when the session is
/// opened): renewals are batched statements on the reaper's connections and a
/// session's row must outlive a renewal's round trip and a durable commit.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);

/// Connections in the pool used for queues, barriers and STM, and the notification
/// listener (holds and renewals have pools of their own).
const POOL_SIZE: u32 = 8;

/// Connections of the reaper (the sessions' batched renewals, ending sessions, the
/// sweep), apart from the pool.
const REAPER_SIZE: u32 = 2;

/// Connections for the sessions' holds, waits and releases (every lock, read-write
/// lock, candidacy and permit of the process, see `hold`), apart from the pool that
/// STM bodies can exhaust.
const HOLDS_SIZE: u32 = 8;

/// Connects to the database named by `url` and returns a [`Coordinator`] over it.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// As [`backend`].
pub async fn connect(url: &str) -> Result<Coordinator> {
    Ok(Coordinator::new(backend(url).await?))
}

/// Connects to the database named by `url` (see [`PostgresConfig::parse`] for the URL form,
/// TLS and timeouts), creating the schema's objects if needed.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// [`Error::InvalidUrl`] for a malformed URL (password masked), and as
/// [`backend_with_config`].
pub async fn backend(url: &str) -> Result<PostgresBackend> {
    backend_with_config(&PostgresConfig::parse(url)?).await
}

/// Like [`backend`], from an already parsed (or built, [`PostgresConfig::from_options`]) URL.
///
/// Cancel-safe: dropping the future drops the connection attempt.
///
/// # Errors
/// - [`Error::InvalidArgument`] for certificate or key files that cannot be read;
/// - [`Error::Connection`] when the server cannot be reached, fails the TLS handshake
///   (an untrusted server certificate, a client certificate it refuses) or does not
///   answer within the connect timeout;
/// - [`Error::Authentication`] for a wrong user or password, or a login `pg_hba.conf`
///   refuses (e.g. without the client certificate it requires);
/// - [`Error::Unsupported`] behind a pooler in transaction pooling mode (`checks`);
/// - the schema-creation error.
pub async fn backend_with_config(url: &PostgresConfig) -> Result<PostgresBackend> {
    tls::check_files(url)?;
    let pool = within_connect_timeout(url, async {
        checks::refuse_transaction_pooling(&url.options).await?;
        pool_options(POOL_SIZE, url)
            .connect_with(url.options.clone().application_name("distsync"))
            .await
            .map_err(map)
    })
    .await?;
    finish(pool, url).await
}

/// A backend over a [`sqlx::PgPool`] of your own (its queues, barriers and STM run on
/// it, and the notification listener takes one of its connections), and `url`'s
/// connection options, schema and timeouts for the connections it opens itself: the
/// holds' pool (8), the reaper's (2) and the checks made here. Build `url` with
/// [`PostgresConfig::from_options`] from the same `PgConnectOptions` as the pool (credentials,
/// TLS), or parse one.
///
/// Requirements:
/// - **Session pooling.** If a pooler (PgBouncer, ...) stands between the application
///   and PostgreSQL, it must run `pool_mode = session` for both the pool and `url`'s
///   connections: `LISTEN` belongs to a server connection. A transaction pooler behind
///   `url` is detected and refused.
/// - A role with `CREATE` on the database or on an existing schema (see `schema`),
///   or one that may use the schema's objects once another role has created them.
/// - **Durable commits** on the pool: `synchronous_commit` `on` (the server's
///   default); a pool whose connections say otherwise is refused (checked on one
///   connection), since fencing counters must not go backwards after a crash. Set it
///   per connection with `after_connect` running
///   `SELECT set_config('synchronous_commit', 'on', false)` if the role's or
///   database's default is off.
/// - Room in the pool: blocked STM bodies and dequeues hold pool connections while
///   they run.
///
/// Cancel-safe: dropping the future drops the checks.
///
/// # Errors
/// As [`backend_with_config`]; [`Error::InvalidArgument`] for a pool whose commits are
/// not durable.
pub async fn backend_from_pool(
    pool: sqlx::PgPool,
    url: &PostgresConfig,
) -> Result<PostgresBackend> {
    tls::check_files(url)?;
    within_connect_timeout(url, async {
        checks::refuse_transaction_pooling(&url.options).await?;
        let commit: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&pool)
            .await
            .map_err(map)?;
        if !matches!(commit.as_str(), "on" | "remote_write" | "remote_apply") {
            return Err(Error::InvalidArgument(format!(
                "the pool's connections run with synchronous_commit = {commit}: fencing \
                 tokens could go backwards after a server crash (set it to on, e.g. in \
                 the pool's after_connect)"
            )));
        }
        Ok(())
    })
    .await?;
    finish(pool, url).await
}

/// Runs `connect` for at most the connect timeout of `url`, then an
/// [`Error::Connection`] naming the server (password masked).
async fn within_connect_timeout<T>(
    url: &PostgresConfig,
    connect: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let timeout = url.connect_timeout();
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(Error::connection(
                BACKEND,
                format!(
                    "{url} did not answer within the connect timeout ({timeout:?}; \
                     `connect_timeout=` in the URL)"
                ),
            ))
        })
}

/// The rest of connecting, on a working pool: the holds' and the reaper's pools, the
/// schema.
async fn finish(pool: sqlx::PgPool, url: &PostgresConfig) -> Result<PostgresBackend> {
    let reaper = pool_options(REAPER_SIZE, url)
        .connect_lazy_with(url.options.clone().application_name("distsync/reaper"));
    let holds = pool_options(HOLDS_SIZE, url)
        .connect_lazy_with(url.options.clone().application_name("distsync/holds"));
    let ns_oid = schema::ensure(&pool, &url.schema).await?;
    let pools = shared::Pools {
        pool,
        holds,
        reaper,
    };
    let shared = Shared::new(pools, url.schema.clone(), ns_oid, Limits::default());
    tracing::debug!(backend = BACKEND, %url, "connected");
    Ok(PostgresBackend {
        shared: Arc::new(shared),
        capabilities: capabilities(),
    })
}

/// Pool options whose connections commit durably (see `conn::POOL_SETUP`); opening a
/// connection or waiting for a free one is bounded by `url`'s request timeout.
fn pool_options(size: u32, url: &PostgresConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(url.request_timeout())
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query(conn::POOL_SETUP).execute(conn).await?;
                Ok(())
            })
        })
}

/// What the PostgreSQL backend offers and claims: every primitive and every STM level,
/// and
/// - `fencing`: counter rows bumped by the granting statement, committed with
///   `synchronous_commit = on`, so tokens never go backwards across a crash or an
///   immediate shutdown of the server;
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
/// - `min_session_ttl`: [`MIN_SESSION_TTL`], 1 s.
pub fn capabilities() -> Capabilities {
    Capabilities {
        // `guarded_put`: the write commits only while the guard's entry is a current
        // grant (see the guarded-write module).
        guarded_writes: true,
        // `Queue::receive`: a hold on the item's row, counting while the session's row
        // is live (see the queue module).
        reliable_delivery: true,
        // One server, no synchronous standby: a failover to a streaming standby can
        // lose what the primary acknowledged last (docs/HIGH_AVAILABILITY.md).
        survives_failover: false,
        ..Capabilities::all(BACKEND, MIN_SESSION_TTL)
    }
}

/// The PostgreSQL backend (`postgres://`). See the crate docs.
pub struct PostgresBackend {
    shared: Arc<Shared>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("schema", &self.shared.schema)
            .finish()
    }
}

impl PostgresBackend {
    /// The schema holding this backend's tables.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    fn lease(&self, session: &Session) -> Result<Arc<LeaseInner>> {
        let lease = &session.lease_for::<PgLease>(BACKEND)?.inner;
        if !Arc::ptr_eq(&lease.shared, &self.shared) {
            return Err(Error::InvalidArgument(format!(
                "session {} was granted by another postgres backend",
                session.id()
            )));
        }
        Ok(Arc::clone(lease))
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        session::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        let id = i64::try_from(id.0)
            .map_err(|_| Error::InvalidArgument(format!("no postgres session has id {id}")))?;
        self.shared.end_sessions(&[id]).await
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        Ok(Box::new(lock::PgLocker {
            lease: self.lease(session)?,
            session: session.clone(),
            name,
        }))
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        Ok(Box::new(election::PgElection {
            lease: self.lease(session)?,
            session: session.clone(),
            name,
        }))
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        Ok(Box::new(rwlock::PgRwLock {
            lease: self.lease(session)?,
            session: session.clone(),
            name,
        }))
    }

    fn queue(&self, name: Name) -> Result<Box<dyn Queue>> {
        Ok(Box::new(queue::PgQueue {
            shared: Arc::clone(&self.shared),
            name,
        }))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        Ok(Box::new(barrier::PgBarrier {
            shared: Arc::clone(&self.shared),
            name,
        }))
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: usize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        if count == 0 {
            return Err(Error::InvalidArgument(
                "a double barrier needs at least one participant".into(),
            ));
        }
        let count_sql = i32::try_from(count).map_err(|_| {
            Error::InvalidArgument(format!("double barrier count {count} is too large"))
        })?;
        Ok(Box::new(double_barrier::PgDoubleBarrier {
            lease: self.lease(session)?,
            participant: double_barrier::participant(),
            name,
            count,
            count_sql,
        }))
    }

    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: usize,
    ) -> Result<Box<dyn distsync_core::Semaphore>> {
        if permits == 0 {
            return Err(Error::InvalidArgument(
                "a semaphore needs at least 1 permit".into(),
            ));
        }
        let permits_sql = i32::try_from(permits).map_err(|_| {
            Error::InvalidArgument(format!("semaphore permit count {permits} is too large"))
        })?;
        Ok(Box::new(semaphore::PgSemaphore {
            lease: self.lease(session)?,
            session: session.clone(),
            name,
            permits,
            permits_sql,
        }))
    }

    fn stm(&self) -> Result<Stm> {
        Ok(Stm::new(Arc::new(stm::PgStm {
            shared: Arc::clone(&self.shared),
        })))
    }

    async fn export(&self) -> Result<Snapshot> {
        export::export(&self.shared).await
    }

    /// Who holds what in the schema; see `status` for what is read.
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        status::status(&self.shared, prefix).await
    }
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}

    /// `connect` and `backend` can be spawned (compile-time check).
    #[allow(dead_code)]
    fn futures_are_send() {
        assert_send(super::backend(""));
        assert_send(super::connect(""));
    }
}
