//! What every primitive of one backend shares: the pool, the schema, the name table
//! cache, the notification hub and the sessions of this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use distsync_core::{Error, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::conn::Conn;
use crate::error::{map, BACKEND};
use crate::notify::Hub;
use crate::schema;
use crate::session::LeaseInner;

/// The kinds of names that get advisory lock keys (rows of `lock_names`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LockKind {
    /// [`crate::lock`].
    Lock,
    /// [`crate::rwlock`].
    RwLock,
    /// [`crate::election`].
    Election,
    /// [`crate::semaphore`] (its name row holds the fencing counter; no advisory lock).
    Semaphore,
}

impl LockKind {
    /// The kind as stored in `lock_names.kind`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LockKind::Lock => "lock",
            LockKind::RwLock => "rwlock",
            LockKind::Election => "election",
            LockKind::Semaphore => "semaphore",
        }
    }
}

pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    /// The reaper's own connections: ending sessions, enforcing TTLs, abandoning waits.
    /// Separate from `pool`, which STM bodies and blocked dequeues can exhaust.
    pub(crate) reaper: PgPool,
    options: PgConnectOptions,
    pub(crate) schema: String,
    quoted: String,
    ns_oid: u32,
    pub(crate) hub: Hub,
    names: Mutex<HashMap<(LockKind, String), i32>>,
    sessions: Mutex<HashMap<i64, Weak<LeaseInner>>>,
    last_sweep: Mutex<Option<Instant>>,
}

/// How often one backend sweeps the sessions table for expired sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(
        pool: PgPool,
        reaper: PgPool,
        options: PgConnectOptions,
        schema: String,
        ns_oid: u32,
    ) -> Self {
        let hub = Hub::new(pool.clone(), format!("distsync_{ns_oid}"));
        Self {
            pool,
            reaper,
            options,
            quoted: schema::quote(&schema),
            schema,
            ns_oid,
            hub,
            names: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
        }
    }

    /// `template` with `{s}` replaced by the quoted schema name.
    pub(crate) fn sql(&self, template: &str) -> String {
        schema::render(template, &self.quoted)
    }

    /// The first key of every advisory lock of this schema: the schema's OID, as the
    /// `int4` `pg_advisory_lock(int4, int4)` takes (same bits).
    pub(crate) fn key1(&self) -> i32 {
        self.ns_oid as i32
    }

    /// The `application_name` of the dedicated connections of session `id`.
    pub(crate) fn tag(&self, id: i64) -> String {
        format!("distsync/{}/{id}", self.ns_oid)
    }

    /// Opens a connection outside the pool, tagged as belonging to session `id`, watched
    /// for its death (see [`crate::conn`]).
    pub(crate) async fn connect_dedicated(&self, id: i64) -> Result<Conn> {
        let options = self.options.clone().application_name(&self.tag(id));
        Conn::open(&options, self.sql("SELECT {s}.release_all()"))
            .await
            .map_err(map)
    }

    /// Forgets the cached id of `name` (its row is gone).
    pub(crate) fn forget_name(&self, kind: LockKind, name: &str) {
        lock(&self.names).remove(&(kind, name.to_owned()));
    }

    /// The id of `name` in the name table (created on first use); the second key of its
    /// advisory lock and the row of its fencing counter.
    pub(crate) async fn name_id(&self, kind: LockKind, name: &str) -> Result<i32> {
        if let Some(&id) = lock(&self.names).get(&(kind, name.to_owned())) {
            return Ok(id);
        }
        let sql = self.sql(
            "WITH ins AS (INSERT INTO {s}.lock_names (kind, name) VALUES ($1, $2) \
             ON CONFLICT (kind, name) DO NOTHING RETURNING id) \
             SELECT id FROM ins UNION ALL \
             SELECT id FROM {s}.lock_names WHERE kind = $1 AND name = $2",
        );
        // A concurrent creator's row may commit after this statement's snapshot: then
        // neither branch returns it, and the next attempt does.
        for _ in 0..5 {
            let id: Option<i32> = sqlx::query_scalar(&sql)
                .bind(kind.as_str())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(map)?;
            if let Some(id) = id {
                lock(&self.names).insert((kind, name.to_owned()), id);
                return Ok(id);
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("could not register the {} name {name:?}", kind.as_str()),
        ))
    }

    /// Ends sessions now: deletes their rows (with their leader rows and double-barrier
    /// entries) and terminates their backends, releasing their advisory locks.
    pub(crate) async fn end_sessions(&self, ids: &[i64]) -> Result<()> {
        for id in ids {
            if let Some(lease) = lock(&self.sessions).get(id).and_then(Weak::upgrade) {
                lease.fail();
            }
        }
        sqlx::query(&self.sql("SELECT {s}.end_sessions($1)"))
            .bind(ids)
            .execute(&self.reaper)
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Ends the connections of session `id`, whose owner has declared it lost, keeping
    /// its row: what it held stays held back from others until the row expires.
    pub(crate) async fn terminate_session(&self, id: i64) -> Result<()> {
        sqlx::query(&self.sql("SELECT {s}.terminate_sessions($1)"))
            .bind(&[id][..])
            .execute(&self.reaper)
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Abandons a grant its client gave up on: deletes the grant rows of backend `pid`
    /// and terminates it if it still belongs to session `id`.
    pub(crate) async fn abandon(&self, id: i64, pid: i32) -> Result<()> {
        sqlx::query(&self.sql("SELECT {s}.abandon($1, $2)"))
            .bind(id)
            .bind(pid)
            .execute(&self.reaper)
            .await
            .map_err(map)?;
        Ok(())
    }

    pub(crate) fn register_session(&self, id: i64, lease: Weak<LeaseInner>) {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, lease| lease.strong_count() > 0);
        sessions.insert(id, lease);
    }

    pub(crate) fn unregister_session(&self, id: i64) {
        lock(&self.sessions).remove(&id);
    }

    /// At most every [`SWEEP_EVERY`], ends (in the background) sessions whose heartbeat
    /// is older than their TTL: the rows of crashed clients go, and a stalled holder
    /// loses its locks even when nobody waits for them. Called by keepalives.
    pub(crate) fn sweep_if_due(self: &Arc<Self>) {
        {
            let mut last = lock(&self.last_sweep);
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let swept = sqlx::query_scalar::<_, i32>(&shared.sql(
                "SELECT {s}.reap_sessions(ARRAY(SELECT id FROM {s}.sessions \
                 WHERE expires_at <= clock_timestamp() ORDER BY expires_at LIMIT 100))",
            ))
            .fetch_one(&shared.reaper)
            .await;
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "ended expired sessions"),
                Err(error) => tracing::debug!(%error, "sweeping expired sessions failed"),
            }
        });
    }
}
