//! The factories (from a URL, a parsed [`PostgresConfig`], or a pool of the
//! application's) and [`PostgresBackend`], the [`Backend`] they return.

use distsync_core::raw::{name_connect_timeout, Make, OnSession};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::migrate::Snapshot;
use distsync_core::{
    Backend, Capabilities, Error, Name, Result, Session, SessionId, SessionOptions,
};
use sqlx::postgres::PgPoolOptions;

use crate::amnesia::Amnesia;
use crate::capabilities::capabilities_with_bound;
use crate::connection::config::PostgresConfig;
use crate::connection::{checks, liveness, pool_setup};
use crate::epoch;
use crate::error::{map, BACKEND};
use crate::limits::Limits;
use crate::outbox::Outbox;
use crate::schema;
use crate::session::LeaseInner;
use crate::store::{self, Shared};
use crate::transaction_lock::TransactionLock;
use crate::unflushed_grants::Sentinel;
use crate::{
    barrier, double_barrier, election, export, lock, queue, rwlock, semaphore, session, status,
    stm, unfair_lock,
};

/// Connections in the pool used for queues, barriers and STM, and the notification
/// listener (holds and renewals have pools of their own).
const POOL_SIZE: u32 = 8;

/// Connections of the reaper (the sessions' batched renewals, ending sessions, the
/// sweep), apart from the pool.
const REAPER_SIZE: u32 = 2;

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
/// - [`Error::InvalidArgument`] for certificate or key files that cannot be read, or
///   `grants=unflushed` without `max_session_ttl`;
/// - [`Error::Connection`] when the server cannot be reached, fails the TLS handshake
///   (an untrusted server certificate, a client certificate it refuses) or does not
///   answer within the connect timeout;
/// - [`Error::Authentication`] for a wrong user or password, or a login `pg_hba.conf`
///   refuses (e.g. without the client certificate it requires);
/// - [`Error::Unsupported`] behind a pooler in transaction pooling mode (`connection::checks`);
/// - [`Error::IncompatibleLayout`] for a schema written by a newer, incompatible
///   client ([`LAYOUT_VERSION`](crate::LAYOUT_VERSION)), [`Error::Unsupported`] for one
///   of an older layout; either is left untouched (see docs/MIGRATING.md);
/// - the schema-creation error.
pub async fn backend_with_config(url: &PostgresConfig) -> Result<PostgresBackend> {
    let pool = connecting(url, async {
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
/// holds' pool (`hold_connections`, 8 by default), the reaper's (2) and the checks made here. Build `url` with
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
    connecting(url, async {
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

/// What both factories check first (`url`'s bound for unflushed grants and its TLS
/// files), then no transaction pooler and `connect`, for at most the connect timeout of
/// `url`, then an [`Error::Connection`] naming the server (password masked); a
/// connection error of either (a refused port) names the option too.
async fn connecting<T>(
    url: &PostgresConfig,
    connect: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    url.unflushed_grants_bound()?;
    distsync_core::raw::check_tls_files(BACKEND, url.files())?;
    let timeout = url.connect_timeout();
    let connect = async {
        let connected = async {
            checks::refuse_transaction_pooling(&url.options).await?;
            connect.await
        };
        connected
            .await
            .map_err(|error| name_connect_timeout(error, timeout))
    };
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
    // The sessions' holds, waits and releases (every lock, read-write lock, candidacy
    // and permit of the process, see `waiter_line`) have a pool of their own, apart from the
    // one that STM bodies can exhaust.
    let holds = pool_options(url.hold_connections(), url)
        .connect_lazy_with(url.options.clone().application_name("distsync/holds"));
    let oid = schema::ensure(&pool, &url.schema).await?;
    let pools = store::Pools {
        pool,
        holds,
        reaper,
    };
    // Every pooled connection commits with `synchronous_commit = on` (connection::POOL_SETUP):
    // with a synchronous standby named, a commit returns only once the standby has it,
    // so what was acknowledged survives the standby's promotion.
    let synchronous_standby: bool =
        sqlx::query_scalar("SELECT current_setting('synchronous_standby_names') <> ''")
            .fetch_one(&pools.pool)
            .await
            .map_err(map)?;
    let shared = Shared::new(
        pools,
        url.schema.clone(),
        oid,
        Limits::default(),
        Amnesia::new(url.max_session_ttl()),
        Sentinel::new(url.unflushed_grants()),
    )
    .with_stale_claim(url.stale_claim());
    // The server's epoch, so that releases commit asynchronously from the start (see
    // `crate::connection::unflushed`); NULL (releases stay synchronous) where it cannot be read.
    let epoch: Option<String> = sqlx::query_scalar(&shared.sql("SELECT {s}.server_epoch()"))
        .fetch_one(shared.bounded())
        .await
        .map_err(map)?;
    if epoch.is_none() {
        tracing::info!(
            "the server's epoch (pg_control_checkpoint) cannot be read: releases commit synchronously"
        );
    }
    // The timeline a later promotion is told from (see `crate::connection::promotion`).
    shared.promotion.seen(epoch.as_deref(), synchronous_standby);
    shared.unflushed.settle(shared.unflushed.mark(), epoch);
    // Under unflushed grants, the crash sentinel grants are made under (written again,
    // with the store's lock-delay, if a crash emptied it), before the marker is read:
    // a lock-delay it starts is waited out by this client too.
    epoch::sentinel_connected(&shared).await?;
    // The store this client knows, to tell one that forgot (see `crate::amnesia`).
    epoch::connected(&shared).await?;
    tracing::debug!(
        backend = BACKEND,
        %url,
        synchronous_standby,
        "connected"
    );
    // Facts of the connected server refine what the backend type claims: a synchronous
    // standby gives `survives_failover`. Unflushed grants commit without waiting for the
    // standby either.
    let capabilities = capabilities_with_bound(url.max_session_ttl())
        .with_survives_failover(synchronous_standby && !url.unflushed_grants());
    let shared = Arc::new(shared);
    let weak = Arc::downgrade(&shared);
    shared.sentinel.on_moved(Box::new(move |reason, granted| {
        if let Some(shared) = weak.upgrade() {
            epoch::grants_may_be_lost(&shared, reason, granted);
        }
    }));
    Ok(PostgresBackend {
        shared,
        capabilities,
    })
}

/// Pool options whose connections commit durably (see `connection::POOL_SETUP`; under
/// unflushed grants, their grants do not wait for the flush: `connection::pool_setup`);
/// opening a connection or waiting for a free one is bounded by `url`'s request timeout.
fn pool_options(size: u32, url: &PostgresConfig) -> PgPoolOptions {
    // Checked by the factories before anything connects.
    let setup: Arc<str> = pool_setup(url.unflushed_grants_bound().unwrap_or(None)).into();
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(url.request_timeout())
        // A connection is tested before it is handed out only when it may have died
        // unnoticed, not on every take (see crate::connection::liveness).
        .test_before_acquire(false)
        .before_acquire(liveness::before_acquire)
        .after_connect(move |conn, _| {
            let setup = Arc::clone(&setup);
            Box::pin(async move {
                sqlx::query(&setup).execute(conn).await?;
                Ok(())
            })
        })
}

/// The PostgreSQL backend (`postgres://`). See the crate docs.
pub struct PostgresBackend {
    pub(crate) shared: Arc<Shared>,
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

    /// The pool this backend's queues, barriers, STM and reads run on (the caller's own
    /// with [`backend_from_pool`]): for an application whose data lives in the same
    /// database, so that a fenced write ([`crate::fence::admit`]) needs no pool of its
    /// own. Holds, waits and renewals have connections apart from it, so a transaction
    /// kept open on it delays none of them; it competes only with the queues, barriers
    /// and STM for the pool's connections (8 under [`backend`], the caller's pool's size
    /// under [`backend_from_pool`]).
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.shared.pool
    }

    /// Enqueues into the queue `queue` inside the caller's own transactions: the
    /// transactional outbox (see [`Outbox`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad queue name.
    pub fn outbox(&self, queue: &str) -> Result<Outbox> {
        Ok(Outbox {
            shared: Arc::clone(&self.shared),
            name: Name::new(queue)?,
        })
    }

    /// A lock held for the rest of the caller's transaction, with a fencing token (see
    /// [`TransactionLock`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad lock name.
    pub fn transaction_lock(&self, name: &str) -> Result<TransactionLock> {
        Ok(TransactionLock {
            shared: Arc::clone(&self.shared),
            name: Name::new(name)?,
        })
    }

    /// What every handle is made from.
    fn context(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn lease(&self, session: &Session) -> Result<Arc<LeaseInner>> {
        crate::session::lease_of(session, &self.shared).map(Arc::clone)
    }

    /// Replaces the bounds on this backend's tables and caches (see [`Limits`]); in
    /// force from the next sweep and the next name looked up.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.set_limits(limits);
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.shared.limits()
    }

    /// How many names the in-process name cache holds (bounded by
    /// [`Limits::name_cache`]).
    pub fn cached_names(&self) -> usize {
        self.shared.cached_names()
    }

    /// Runs one sweep now (it also runs every [`Limits::sweep_every`] from the
    /// sessions' keepalives): ends expired sessions, prunes unused names and old
    /// election log entries. Returns (sessions ended, names pruned, log entries pruned).
    /// It counts as its period's sweep: the keepalives' next one comes
    /// [`Limits::sweep_every`] after it, so a caller that sweeps on its own schedule
    /// (with a long `sweep_every`) decides when names are pruned.
    ///
    /// # Cancel safety
    /// Cancel-safe: each step is one statement; a dropped sweep leaves the rest to the
    /// next one.
    ///
    /// # Errors
    /// The database's error.
    pub async fn sweep(&self) -> Result<(i32, i64, i64)> {
        self.shared.sweep().await
    }
}

distsync_core::impl_primitives!(PostgresBackend {
    locker: lock::PgLocker,
    unfair_locker: unfair_lock::PgUnfairLocker,
    election: election::PgElection,
    rwlock: rwlock::PgRwLock,
    semaphore: semaphore::PgSemaphore,
    double_barrier: double_barrier::PgDoubleBarrier,
    queue: queue::PgQueue,
    barrier: barrier::PgBarrier,
    counter: crate::counter::PgCounter,
    latch: crate::counter::PgLatch,
    rate_limiter: crate::rate_limiter::PgRateLimiter,
    stm: stm::PgStm,
});

/// Implements [`Make`] for the handles made of the backend's [`Shared`] and a name
/// (fields `shared`, `name`), and for those made on a session (`lease`, `session`,
/// `name`).
macro_rules! make_handles {
    (named: $($named:ty),*; on_session: $($on_session:ty),*) => {
        $(impl Make<Arc<Shared>, Name> for $named {
            fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
                Ok(Self { shared: Arc::clone(shared), name })
            }
        })*
        $(impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for $on_session {
            fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
                Ok(Self { lease: on.lease, session: on.session, name: on.name })
            }
        })*
    };
}

make_handles!(
    named: barrier::PgBarrier, crate::counter::PgCounter, queue::PgQueue;
    on_session: lock::PgLocker, rwlock::PgRwLock, election::PgElection
);

#[async_trait]
impl Backend for PostgresBackend {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        self.shared.amnesia.check_ttl(options.ttl)?;
        if self.shared.amnesia.record_ttl(options.ttl) {
            epoch::raise_marker_ttl(&self.shared, options.ttl).await;
        }
        session::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        let id = i64::try_from(id.0)
            .map_err(|_| Error::InvalidArgument(format!("no postgres session has id {id}")))?;
        self.shared.end_sessions(&[id]).await
    }

    async fn export(&self) -> Result<Snapshot> {
        export::export(&self.shared).await
    }

    /// Who holds what in the schema; see `status` for what is read.
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        status::status(&self.shared, prefix).await
    }

    /// The rows of the names under `prefix` in every table of the layout (`purge.rs`).
    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::count_prefix(&self.shared, prefix).await
    }

    /// The server's version and `synchronous_commit` (`facts.rs`).
    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        crate::facts::describe(&self.shared).await
    }

    /// Deletes those rows in one transaction, then ends the sessions already expired
    /// as a sweep does (not counted: they belong to no name; `purge.rs`).
    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::purge_prefix(&self.shared, prefix).await
    }
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}

    /// `backend`'s future can be spawned (compile-time check).
    #[allow(dead_code)]
    fn futures_are_send() {
        assert_send(super::backend(""));
    }
}
