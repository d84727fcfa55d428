//! [`MysqlKv`]: the revisioned key-value model of [`Kv`] on MySQL/MariaDB tables.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::rate_limiter::Rate;
use distsync_core::raw::{name_connect_timeout, RenewalBatch, RetryPolicy};
use distsync_core::session::KeepAlive;
use distsync_core::{Error, Result};
use distsync_kv::kv::{
    Kv, LeaseId, Range, RangeResponse, RateDecision, Revision, Txn, TxnOp, TxnResponse, WatchEvent,
    WatchResponse,
};
use futures::stream::BoxStream;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::Connection as _;
use sqlx::MySqlPool;
use tokio::task::JoinHandle;

use crate::compaction;
use crate::error::{map, within};
use crate::guesses::Guesses;
use crate::key_bell::{self, KeyBells};
use crate::replication::SemiSync;
use crate::schema::Tables;
use crate::watch::Hub;
use crate::{callers, lease, reaper, txn, MysqlConfig, BACKEND};

/// How long, in seconds, the server lets a connection sit idle inside a transaction
/// before it ends the connection (and rolls the transaction back).
const IDLE_TRANSACTION_TIMEOUT: u64 = 1;

/// How many connections a backend keeps apart for its sessions' leases.
const LEASE_CONNECTIONS: u32 = 2;

/// How many connections a backend keeps apart for its watch hub's reads of the log.
const HUB_CONNECTIONS: u32 = 1;

/// A pool of at most `connections`, each opened with `options` (the server `config`
/// names) and set up as the backend needs it (lock waits within the request timeout,
/// and an idle transaction ended after [`IDLE_TRANSACTION_TIMEOUT`]).
fn open_pool(config: &MysqlConfig, options: &MySqlConnectOptions, connections: u32) -> MySqlPool {
    let lock_wait = config.request_timeout().as_secs().max(1);
    MySqlPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(config.request_timeout())
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // The idle timeout frees the revision row of a client stopped inside
                // a transaction (see the crate docs, "A client that stops half-way"):
                // a transaction's statements follow each other within milliseconds.
                sqlx::query(&format!(
                    "SET SESSION innodb_lock_wait_timeout = {lock_wait}"
                ))
                .execute(&mut *conn)
                .await?;
                let idle = sqlx::query(&format!(
                    "SET SESSION idle_transaction_timeout = {IDLE_TRANSACTION_TIMEOUT}"
                ))
                .execute(&mut *conn)
                .await;
                match idle {
                    Err(error) if crate::error::is_unknown_variable(&error) => {
                        tracing::debug!(
                            backend = BACKEND,
                            "no idle_transaction_timeout (MySQL): a client stopped inside \
                             a transaction holds the revision row until its connection dies"
                        );
                        Ok(())
                    }
                    other => other.map(drop),
                }
            })
        })
        .connect_lazy_with(options.clone())
}

/// What the backend's tasks share with it.
pub(crate) struct Core {
    pub(crate) pool: MySqlPool,
    /// The connections of lease grants and renewals, apart from [`Core::pool`]: a
    /// renewal never waits for a connection behind writers queued on the revision
    /// row, so a store slow to write does not end the sessions of its clients.
    pub(crate) lease_pool: MySqlPool,
    /// The sessions' renewals, batched: one statement for every lease due
    /// ([`lease::renew`]), on [`Core::lease_pool`].
    pub(crate) renewals: RenewalBatch<LeaseId>,
    pub(crate) tables: Tables,
    pub(crate) hub: Hub,
    /// The bells of the keys this process creates on a lease (`key_bell.rs`).
    pub(crate) bells: Arc<KeyBells>,
    /// The keys this process last wrote on a lease, guessed by the next transaction
    /// on them (`guesses.rs`).
    pub(crate) guesses: Guesses,
}

impl Core {
    /// Tells the watch hub, the key bells and the own keys of `events`, the changes
    /// of a transaction this process committed: the hub reads the log at once, the
    /// bells of created and deleted keys are taken and released, and the next
    /// transaction on a key written here guesses its row.
    pub(crate) fn committed(&self, events: &[WatchEvent]) {
        if events.is_empty() {
            return;
        }
        self.hub.ring();
        self.bells.committed(events);
        self.guesses.committed(events);
    }
}

/// The revisioned key-value store of etcd's v3 model ([`Kv`]) on MySQL or MariaDB
/// (InnoDB): a log of every change, one global revision, transactions with compares,
/// watches from a revision, and leases on the server's clock. See the crate docs for
/// the tables and the choices behind them.
///
/// Dropping it stops its watch hub and its reaper; its pool closes with the last
/// clone of the pool.
pub struct MysqlKv {
    core: Arc<Core>,
    request_timeout: Duration,
    reaper: JoinHandle<()>,
    /// The primary's semi-synchronous replication, as read at connect (`None`: the
    /// server has none).
    semi_sync: Option<SemiSync>,
    /// The server's `max_allowed_packet`, as read at connect.
    max_allowed_packet: usize,
}

impl std::fmt::Debug for MysqlKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlKv")
            .field("tables", &self.core.tables)
            .field("hub", &self.core.hub)
            .field("request_timeout", &self.request_timeout)
            .field("semi_sync", &self.semi_sync)
            .finish_non_exhaustive()
    }
}

impl Drop for MysqlKv {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

impl MysqlKv {
    /// Connects to the server `config` names, creates its tables unless they are there
    /// (`schema::Tables::ensure`), reads its semi-synchronous replication settings (see
    /// [`MysqlKv::replica_has_every_commit`]) on that one connection, and starts the
    /// reaper; the pools connect as requests need them.
    ///
    /// Cancel safety: dropping the future drops the connection being made; tables
    /// created so far stay (creating them again is a no-op).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TLS file that cannot be read (before any
    /// connection); [`Error::Connection`] when the server does not answer within the
    /// connect timeout, or TLS fails (an untrusted server certificate, a client
    /// certificate the server's TLS refuses); [`Error::Authentication`] for a refused
    /// login (a wrong password, no client certificate for a user that requires one);
    /// [`Error::Backend`] when the tables cannot be created (the user lacks `CREATE`).
    pub async fn connect(config: &MysqlConfig) -> Result<Self> {
        distsync_core::raw::check_tls_files(crate::BACKEND, &config.tls_files())?;
        let tables = Tables::new(config.table_prefix());
        let timeout = config.connect_timeout();
        let (semi_sync, max_allowed_packet) =
            within(timeout, "connect_timeout", "connecting", async {
                // One connection, outside the pools, does what connecting checks: the
                // pools open theirs as requests need them (each within the request
                // timeout), so that connecting costs one connection and a few round
                // trips, and a refused port fails at once instead of after the pool's
                // retries.
                let mut conn = sqlx::mysql::MySqlConnection::connect_with(config.connect_options())
                    .await
                    .map_err(|error| name_connect_timeout(map(error), timeout))?;
                tables.ensure(&mut conn).await?;
                let semi_sync = SemiSync::read(&mut conn).await?;
                let max_allowed_packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(map)?;
                conn.close().await.map_err(map)?;
                Ok((
                    semi_sync,
                    usize::try_from(max_allowed_packet).unwrap_or(usize::MAX),
                ))
            })
            .await?;
        let options = config.connect_options();
        let pool = open_pool(config, options, config.pool_size());
        let lease_pool = open_pool(config, options, LEASE_CONNECTIONS);
        tracing::debug!(backend = BACKEND, %config, ?semi_sync, "connected");
        let bells = Arc::new(match config.key_bells() {
            0 => KeyBells::off(config.table_prefix()),
            waits => {
                let options = key_bell::connect_options(options);
                let waits = open_pool(config, &options, waits);
                KeyBells::new(config.table_prefix(), options, waits)
            }
        });
        let core = Arc::new(Core {
            hub: Hub::new(
                open_pool(config, options, HUB_CONNECTIONS),
                pool.clone(),
                tables.clone(),
                config.poll_interval(),
                config.request_timeout(),
                Arc::clone(&bells),
            ),
            bells,
            renewals: {
                let (pool, tables) = (lease_pool.clone(), tables.clone());
                let timeout = config.request_timeout();
                RenewalBatch::start(lease::MAX_RENEWALS, move |ids| {
                    lease::renew(pool.clone(), tables.clone(), timeout, ids)
                })
            },
            pool,
            lease_pool,
            tables,
            guesses: Guesses::default(),
        });
        let reaper = tokio::spawn(reaper::run(Arc::downgrade(&core)));
        Ok(Self {
            core,
            request_timeout: config.request_timeout(),
            reaper,
            semi_sync,
            max_allowed_packet,
        })
    }

    /// The server's `max_allowed_packet` (the largest statement it takes), as read at
    /// connect; [`crate::max_value_size`] makes the backend's value limit of it.
    pub fn max_allowed_packet(&self) -> usize {
        self.max_allowed_packet
    }

    /// Whether the primary acknowledges a commit only once a replica has it: MariaDB's
    /// semi-synchronous replication enabled with the `AFTER_SYNC` wait point, as read
    /// at connect. Then a replica promoted after the primary dies has every commit a
    /// client saw, so the backend declares `survives_failover`. When it stops holding,
    /// unseen from here: the crate docs, "Failover to a replica".
    pub fn replica_has_every_commit(&self) -> bool {
        self.semi_sync.as_ref().is_some_and(SemiSync::lossless)
    }

    /// Compacts history before `revision`, as etcd's `Compact`: reads at older
    /// revisions then fail with [`StoreError::Compacted`](distsync_kv::StoreError), and
    /// watches from them get [`WatchResponse::Compacted`]. The reaper compacts on its
    /// own (see the crate docs, "Compaction"); this is for tests and operators, and
    /// waits, within the request timeout, for another process's compaction to end.
    ///
    /// Cancel safety: as a statement each; a cancelled compaction leaves rows the
    /// next one removes.
    ///
    /// # Errors
    /// [`StoreError::FutureRevision`](distsync_kv::StoreError) for a revision not reached
    /// yet; [`Error::Connection`] when another process compacted throughout the request
    /// timeout; the server's error.
    pub async fn compact(&self, revision: Revision) -> Result<Revision> {
        let compacted = within(
            self.request_timeout,
            "timeout",
            "compacting",
            compaction::compact(
                &self.core.pool,
                &self.core.tables,
                revision,
                self.request_timeout,
            ),
        )
        .await?;
        compacted.ok_or_else(|| {
            Error::connection(
                BACKEND,
                "another process compacted the log throughout the request timeout",
            )
        })
    }

    /// Runs `work` in a task of its own and waits for it within the request timeout. A
    /// caller that gives up leaves the task to finish (why: the crate docs, "A client
    /// that stops half-way"), and a commit is then as applied as after any lost reply.
    async fn detached<T, F, Fut>(&self, doing: &'static str, work: F) -> Result<T>
    where
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let task = tokio::spawn(work(Arc::clone(&self.core)));
        within(self.request_timeout, "timeout", doing, async {
            task.await
                .map_err(|error| Error::backend(BACKEND, format!("{doing}: {error}")))?
        })
        .await
    }

    /// The pool of connections, e.g. to inspect the tables, or to begin a transaction
    /// of the caller's that an [`crate::Outbox`] or [`crate::ack_in`] joins.
    pub fn pool(&self) -> &MySqlPool {
        &self.core.pool
    }

    /// The backend's tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.core.tables
    }
}

#[async_trait]
impl Kv for MysqlKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        // A range is a read-only transaction of one range: one snapshot, the revision
        // row read in it.
        let response = self
            .txn(Txn::default().and_then(vec![TxnOp::Range(range)]))
            .await?;
        response
            .responses
            .into_iter()
            .find_map(|response| match response {
                distsync_kv::kv::TxnOpResponse::Range(range) => Some(range),
                _ => None,
            })
            .ok_or_else(|| Error::backend(BACKEND, "a range answered without its range"))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if callers::active() {
            // A recipe inside the caller's transaction (see `callers`): its writers
            // are woken by the watch hub's poll once the caller commits.
            return callers::route(&self.core.tables, txn)
                .await
                .map(|applied| applied.response);
        }
        self.detached("a transaction", |core| async move {
            let applied = txn::run(&core.pool, &core.tables, &core.guesses, txn).await?;
            core.committed(&applied.events);
            Ok(applied.response)
        })
        .await
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        let key = key.to_owned();
        self.detached("opening a watch", move |core| async move {
            core.hub.watch(&key, prefix, start_revision).await
        })
        .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.detached("granting a lease", move |core| async move {
            lease::grant(&core.lease_pool, &core.tables, ttl).await
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.detached("renewing a lease", move |core| async move {
            match core.renewals.renew(lease).await {
                Ok(true) => Ok(KeepAlive::Renewed),
                Ok(false) => Ok(KeepAlive::Gone),
                Err(message) => Err(Error::connection(BACKEND, message)),
            }
        })
        .await
    }

    /// Revokes `lease`, deleting its keys in one revision. Revoking a lease the store
    /// does not know (never granted, already revoked or expired) succeeds and does
    /// nothing, as on the memory store.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.detached("revoking a lease", move |core| async move {
            if let Some((_, events)) = lease::end(&core.pool, &core.tables, lease, false).await? {
                core.committed(&events);
            }
            Ok(())
        })
        .await
    }

    /// The lease row's deadline less the server's clock (see `lease.rs`): one
    /// statement, one round trip.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.detached("reading a lease's time left", move |core| async move {
            lease::time_to_live(&core.pool, &core.tables, lease).await
        })
        .await
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::within(self.request_timeout)
    }

    /// The server's UTC time, in microseconds since the Unix epoch (see `clock.rs`):
    /// one statement, one round trip.
    async fn clock(&self) -> Result<Option<Duration>> {
        self.detached("reading the server's clock", |core| async move {
            crate::clock::now(&core.pool).await.map(Some)
        })
        .await
    }

    /// One statement on the limiter's row, on the server's clock, outside the revision
    /// order (see `rate_limit.rs`): one round trip a decision.
    async fn rate_limit(
        &self,
        key: &str,
        rate: &Rate,
        permits: u32,
    ) -> Result<Option<RateDecision>> {
        let (key, rate) = (key.to_owned(), *rate);
        self.detached("deciding a rate limit", move |core| async move {
            crate::rate_limit::decide(&core.pool, &core.tables, &key, &rate, permits)
                .await
                .map(Some)
        })
        .await
    }

    async fn describe(&self) -> Result<Vec<(String, String)>> {
        let (version, flush, log_bin, sync_binlog, max_connections): (String, i64, i64, i64, i64) =
            within(
                self.request_timeout,
                "timeout",
                "describing the store",
                async {
                    sqlx::query_as(
                        // The server answers its unsigned variables as BIGINT UNSIGNED.
                        "SELECT VERSION(), CAST(@@innodb_flush_log_at_trx_commit AS SIGNED), \
                     CAST(@@log_bin AS SIGNED), CAST(@@sync_binlog AS SIGNED), \
                     CAST(@@max_connections AS SIGNED)",
                    )
                    .fetch_one(&self.core.pool)
                    .await
                    .map_err(map)
                },
            )
            .await?;
        Ok([
            ("version", version),
            ("innodb_flush_log_at_trx_commit", flush.to_string()),
            ("log_bin", log_bin.to_string()),
            ("sync_binlog", sync_binlog.to_string()),
            ("max_connections", max_connections.to_string()),
        ]
        .into_iter()
        .chain(self.semi_sync.iter().flat_map(SemiSync::describe))
        .map(|(name, value)| (name.to_owned(), value))
        .collect())
    }
}
