//! What every primitive of one backend shares: the pool, the schema, the name table
//! cache, the notification hub, the heartbeat and the sessions of this process, and
//! the sweep that keeps the tables bounded (see [`crate::limits`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use distsync_core::raw::locked;
use distsync_core::raw::RetryPolicy;
use distsync_core::{Error, Result};
use sqlx::PgPool;

use crate::amnesia::Amnesia;
use crate::connection::bounded::Bounded;
use crate::connection::heartbeat::Heartbeat;
use crate::connection::promotion::Promotion;
use crate::connection::reused::Reused;
use crate::connection::unflushed::Unflushed;
use crate::error::{map, BACKEND};
use crate::limits::Limits;
use crate::notify::Hub;
use crate::schema;
use crate::unflushed_grants::Sentinel;

/// The kinds of names (rows of `lock_names`: a fencing counter and a line of entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LockKind {
    /// [`crate::lock`].
    Lock,
    /// [`crate::rwlock`].
    RwLock,
    /// [`crate::election`].
    Election,
    /// [`crate::semaphore`].
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

/// The backend's pools (see [`crate::connection`]).
pub(crate) struct Pools {
    /// Queues, barriers, STM, reads.
    pub(crate) pool: PgPool,
    /// Holds, waits and releases; session rows and name registration.
    pub(crate) holds: PgPool,
    /// Renewals, session ends, the sweep.
    pub(crate) reaper: PgPool,
}

pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    /// The connections of holds, waits and releases: apart from `pool`, which STM
    /// bodies and blocked dequeues can exhaust, so that a grant or a release never
    /// waits for them; kept out of their pool between statements ([`Reused`]).
    pub(crate) holds: Reused,
    /// The reaper's own connections: renewals (the heartbeat), ending sessions, the
    /// sweep. Separate from `pool`, which STM bodies and blocked dequeues can exhaust.
    pub(crate) reaper: PgPool,
    pub(crate) schema: String,
    quoted: String,
    pub(crate) hub: Hub,
    pub(crate) heartbeat: Heartbeat,
    /// The asynchronous releases not yet known durable ([`crate::connection::unflushed`]).
    pub(crate) unflushed: Arc<Unflushed>,
    /// Telling a store that forgot, and the lock-delay after it ([`crate::amnesia`]).
    pub(crate) amnesia: Amnesia,
    /// The crash sentinel under unflushed grants ([`crate::unflushed_grants`]).
    pub(crate) sentinel: Arc<Sentinel>,
    /// The server's timeline as this client last read it
    /// ([`crate::connection::promotion`]).
    pub(crate) promotion: Arc<Promotion>,
    limits: std::sync::RwLock<Limits>,
    /// How old an at-most-once claim must be before a consumer puts its item back (the
    /// URL's `stale_claim=`).
    pub(crate) stale_claim: Duration,
    names: Mutex<HashMap<(LockKind, String), i32>>,
    sessions: Mutex<Registry>,
    last_sweep: Mutex<Option<Instant>>,
}

/// A session of this process as [`Shared`] knows it: told when the store ends it.
pub(crate) trait Registered: Send + Sync {
    /// Declares the session lost.
    fn fail(&self);
}

/// The sessions of this process, by id; dead entries are pruned when the map has
/// doubled since the last pruning (amortized O(1) per session).
#[derive(Default)]
struct Registry {
    sessions: HashMap<i64, Weak<dyn Registered>>,
    prune_at: usize,
}

impl Shared {
    /// Must be called within a tokio runtime (it starts the heartbeat).
    pub(crate) fn new(
        pools: Pools,
        schema: String,
        ns_oid: u32,
        limits: Limits,
        amnesia: Amnesia,
        sentinel: Sentinel,
    ) -> Self {
        let Pools {
            pool,
            holds,
            reaper,
        } = pools;
        let hub = Hub::new(pool.clone(), format!("distsync_{ns_oid}"));
        let quoted = schema::quote(&schema);
        let unflushed = Arc::new(Unflushed::default());
        let sentinel = Arc::new(sentinel);
        let promotion = Arc::new(Promotion::default());
        let heartbeat = Heartbeat::start(
            reaper.clone(),
            &quoted,
            Arc::clone(&unflushed),
            Arc::clone(&sentinel),
            Arc::clone(&promotion),
        );
        Self {
            pool,
            holds: Reused::from_pool(holds),
            reaper,
            quoted,
            schema,
            hub,
            heartbeat,
            unflushed,
            amnesia,
            sentinel,
            promotion,
            limits: std::sync::RwLock::new(limits),
            stale_claim: distsync_core::queue::STALE_CLAIM,
            names: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Registry::default()),
            last_sweep: Mutex::new(None),
        }
    }

    /// The same, putting back at-most-once claims older than `bound` (see
    /// [`Shared::stale_claim`]).
    pub(crate) fn with_stale_claim(mut self, bound: Duration) -> Self {
        self.stale_claim = bound;
        self
    }

    /// The main pool as an executor whose statements fail within twice the request
    /// timeout: once to take a connection, once for the reply ([`crate::connection::bounded`]).
    pub(crate) fn bounded(&self) -> Bounded<&PgPool> {
        Bounded::pool(&self.pool)
    }

    /// The request timeout: the main pool's `acquire_timeout` (the URL's `timeout=`, or
    /// the application's pool's setting).
    pub(crate) fn request_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    /// Core's retry policy, its one-shot budget cut to the request timeout.
    pub(crate) fn retry(&self) -> RetryPolicy {
        RetryPolicy::within(self.request_timeout())
    }

    /// The reaper's pool, bounded as [`Shared::bounded`].
    pub(crate) fn bounded_reaper(&self) -> Bounded<&PgPool> {
        Bounded::pool(&self.reaper)
    }

    /// `template` with `{s}` replaced by the quoted schema name.
    pub(crate) fn sql(&self, template: &str) -> String {
        schema::render(template, &self.quoted)
    }

    /// The limits in force (see [`crate::limits`]).
    pub(crate) fn limits(&self) -> Limits {
        self.limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the limits.
    pub(crate) fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// Forgets the cached id of `name` (its row is gone).
    pub(crate) fn forget_name(&self, kind: LockKind, name: &str) {
        locked(&self.names).remove(&(kind, name.to_owned()));
    }

    /// The id of `name` in the name table (registered on first use, see
    /// `register_name`): the row of its fencing counter and its line of entries.
    pub(crate) async fn name_id(&self, kind: LockKind, name: &str) -> Result<i32> {
        if let Some(&id) = locked(&self.names).get(&(kind, name.to_owned())) {
            return Ok(id);
        }
        let mut taken = self.holds.take().await.map_err(map)?;
        let registered = sqlx::query_scalar(&self.sql("SELECT {s}.register_name($1, $2)"))
            .bind(kind.as_str())
            .bind(name)
            .fetch_one(taken.conn())
            .await;
        let id: Option<i32> = taken.settle(registered).map_err(map)?;
        drop(taken);
        let id = id.ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("could not register the {} name {name:?}", kind.as_str()),
            )
        })?;
        let mut names = locked(&self.names);
        if names.len() >= self.limits().name_cache.max(1) {
            // Full: drop half (any half); those names are looked up again on next use.
            let mut keep = false;
            names.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        names.insert((kind, name.to_owned()), id);
        Ok(id)
    }

    /// How many names the in-process cache holds.
    pub(crate) fn cached_names(&self) -> usize {
        locked(&self.names).len()
    }

    /// Ends sessions now: deletes their rows (with their entries, leader rows and
    /// double-barrier entries), which releases what they held and wakes the waiters.
    pub(crate) async fn end_sessions(&self, ids: &[i64]) -> Result<()> {
        for id in ids {
            let lease = locked(&self.sessions)
                .sessions
                .get(id)
                .and_then(Weak::upgrade);
            if let Some(lease) = lease {
                lease.fail();
            }
        }
        sqlx::query(&self.sql("SELECT {s}.end_sessions($1)"))
            .bind(ids)
            .execute(self.bounded_reaper())
            .await
            .map_err(map)?;
        Ok(())
    }

    pub(crate) fn register_session(&self, id: i64, lease: Weak<dyn Registered>) {
        let mut registry = locked(&self.sessions);
        if registry.sessions.len() >= registry.prune_at {
            registry
                .sessions
                .retain(|_, lease| lease.strong_count() > 0);
            registry.prune_at = (registry.sessions.len() * 2).max(64);
        }
        registry.sessions.insert(id, lease);
    }

    /// Declares every session of this process lost (the store forgot them, see
    /// [`crate::amnesia`]); returns how many there were.
    pub(crate) fn fail_all_sessions(&self) -> usize {
        let live: Vec<Arc<dyn Registered>> = locked(&self.sessions)
            .sessions
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for lease in &live {
            lease.fail();
        }
        live.len()
    }

    pub(crate) fn unregister_session(&self, id: i64) {
        locked(&self.sessions).sessions.remove(&id);
    }

    /// At most every `limits.sweep_every`, in the background: ends sessions whose
    /// heartbeat is older than their TTL (the rows of crashed or stalled clients go,
    /// with their entries), prunes unused names and old election log entries (see
    /// [`crate::limits`]). Called by keepalives.
    pub(crate) fn sweep_if_due(self: &Arc<Self>) {
        {
            let mut last = locked(&self.last_sweep);
            if last.is_some_and(|at| at.elapsed() < self.limits().sweep_every) {
                return;
            }
            *last = Some(Instant::now());
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = shared.sweep().await {
                tracing::debug!(%error, "sweeping failed");
            }
        });
    }

    /// Ends up to 1000 sessions whose heartbeat is older than their TTL (their rows go
    /// with their entries, as a crashed client's would), and returns how many. Every
    /// client does it in its sweep, so a session it ends was already expired for all.
    pub(crate) async fn end_expired_sessions(&self) -> Result<i32> {
        sqlx::query_scalar::<_, i32>(&self.sql(
            "SELECT {s}.reap_sessions(ARRAY(SELECT id FROM {s}.sessions \
             WHERE expires_at <= clock_timestamp() ORDER BY expires_at LIMIT 1000))",
        ))
        .fetch_one(self.bounded_reaper())
        .await
        .map_err(map)
    }

    /// One sweep (see [`Shared::sweep_if_due`]), which starts the next period of
    /// `sweep_if_due`; returns the sessions ended, names pruned and log entries pruned.
    pub(crate) async fn sweep(&self) -> Result<(i32, i64, i64)> {
        *locked(&self.last_sweep) = Some(Instant::now());
        let swept = self.end_expired_sessions().await?;
        if swept > 0 {
            tracing::info!(sessions = swept, "ended expired sessions");
        }
        let limits = self.limits();
        let limit = limits.names_per_sweep_sql();
        let names = self.prune("prune_names", limits.name_idle, limit).await?;
        let log = self
            .prune("prune_election_log", limits.election_log_age, limit)
            .await?;
        if names > 0 || log > 0 {
            tracing::debug!(
                names,
                log,
                "pruned unused names and old election log entries"
            );
        }
        Ok((swept, names, log))
    }

    /// Runs the pruning function `function` (older than `age`, `limit` rows a call) in
    /// up to 10 calls, until one prunes fewer than `limit`; returns how many it pruned.
    async fn prune(&self, function: &str, age: Duration, limit: i32) -> Result<i64> {
        let sql = self.sql(&format!("SELECT {{s}}.{function}($1, $2)"));
        let mut total = 0_i64;
        for _ in 0..10 {
            let pruned: i32 = sqlx::query_scalar(&sql)
                .bind(age.as_secs_f64())
                .bind(limit)
                .fetch_one(self.bounded_reaper())
                .await
                .map_err(map)?;
            total += i64::from(pruned);
            if pruned < limit {
                break;
            }
        }
        Ok(total)
    }
}
