//! [`Shared`]: the connection state that every primitive of one backend shares — the
//! multiplexed connection (to a server, following the Sentinels' primary, or to a
//! Redis Cluster's masters), replica
//! acknowledgement, the pub/sub notifier, the key layout and the namespace — and how
//! it is opened and checked ([`Shared::open`]).
//!
//! The primitives' modules take their connection from here; the factories in
//! `backend.rs` hand a [`Shared`] to each primitive they build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync_core::raw::{name_connect_timeout, MaxSessionTtl, RetryPolicy};
use distsync_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Value};

use crate::call::{Ack, Call};
use crate::capabilities::BACKEND;
use crate::cluster::ClusterLink;
use crate::error::redis_error;
use crate::keys::Keys;
use crate::notify::Notifier;
use crate::options::{RedisOptions, DEFAULT_MAX_SESSION_TTL};
use crate::persistence::Persistence;
use crate::scripts::Lua;
use crate::sentinel::Following;
use crate::target::{Connection, Target};

/// What every primitive of one backend shares.
pub(crate) struct Shared {
    conn: Connection,
    /// Replica acknowledgement of every script run (`wait_replicas`), if asked.
    ack: Option<Ack>,
    pub(crate) notifier: Notifier,
    pub(crate) keys: Keys,
    namespace: String,
    /// Identifies the store (server, database, namespace): sessions of another store
    /// are refused.
    pub(crate) store: String,
    instance: u64,
    calls: AtomicU64,
    /// The bound on session TTLs that turns on the lock-delay after the store forgets
    /// ([`crate::amnesia`]).
    pub(crate) max_session_ttl: Option<std::time::Duration>,
    /// How old an at-most-once claim must be before a consumer puts its item back
    /// (`stale_claim=`), in ms, as the queue scripts take it.
    pub(crate) stale_claim_ms: u64,
    /// Core's retry policy, its one-shot budget cut to the request timeout.
    pub(crate) retry: RetryPolicy,
}

impl Shared {
    /// Whether the store is a Redis Cluster: no script may touch two hash slots (see
    /// [`crate::cluster`]).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Connection::Cluster(_))
    }

    /// Whether the store fails over to replicas of its own accord: a primary found
    /// through Sentinels, or a Redis Cluster.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(self.conn, Connection::Sentinel(_) | Connection::Cluster(_))
    }

    /// Whether the connection follows the primary the Sentinels name.
    pub(crate) fn follows_sentinels(&self) -> bool {
        matches!(self.conn, Connection::Sentinel(_))
    }

    /// Whether every script run waits for replica acknowledgement (`wait_replicas`):
    /// then a grant only counts once a run on the caller's own connection has been
    /// acknowledged, so a waiter re-checks rather than trusting a wake-up's token.
    pub(crate) fn acknowledges(&self) -> bool {
        self.ack.is_some()
    }

    /// The key prefix of this store.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A fresh id for a dequeue call, unique across every client of the store (the
    /// instance id is random, see [`crate::random`]).
    pub(crate) fn call_id(&self) -> String {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        format!("c{}.{n}", self.instance)
    }

    /// A connection handle (cheap: the connection is multiplexed).
    pub(crate) fn conn(&self) -> Connection {
        self.conn.clone()
    }

    /// Starts a call of `script`, with the channel prefix as `ARGV[1]`.
    pub(crate) fn script<'a>(&self, script: &'a Lua) -> Call<'a> {
        let mut call = Call::new(script);
        call.arg(self.keys.channel_prefix());
        call
    }

    /// Starts a call of `script` about the primitive whose keys start with `prefix`,
    /// which the script reads as `ARGV[2]`: the prefix is also declared as its only
    /// key, unread, so that under Redis Cluster the call goes to the master of the
    /// primitive's slot (every key the script builds from the prefix shares its hash
    /// tag).
    pub(crate) fn script_on<'a>(&self, script: &'a Lua, prefix: &str) -> Call<'a> {
        let mut call = self.script(script);
        call.key(prefix).arg(prefix);
        call
    }

    /// Runs a script call (one round trip; `EVALSHA`, loading the script if needed),
    /// acknowledged by replicas when the URL asks for it ([`crate::call`]).
    pub(crate) async fn eval(&self, call: &Call<'_>) -> Result<Value> {
        crate::call::eval(&mut self.conn(), call, self.ack.as_ref()).await
    }

    /// Runs one command, acknowledged by replicas when the URL asks for it.
    pub(crate) async fn query(&self, command: &redis::Cmd) -> Result<Value> {
        crate::call::query(&mut self.conn(), command, self.ack.as_ref()).await
    }

    /// Connects to `target` (within the connect timeout of `options`), checks the
    /// server (login, eviction policy), reads its persistence settings and opens the
    /// connections: returns the state, whether the server may evict keys (accepted
    /// only with `allow_eviction`) and its persistence. Under Redis Cluster both are
    /// read on every node the URL names (the weakest answer counts); the nodes it does
    /// not name are taken to share their configuration. `server` names the server in
    /// errors and logs, without credentials.
    ///
    /// # Errors
    /// As `crate::backend_with_config`.
    pub(crate) async fn open(
        target: Target,
        options: RedisOptions,
        server: &str,
    ) -> Result<(Self, bool, Persistence)> {
        let connect_timeout = options.connect_timeout;
        // Boxed and type-erased: the connect path (TLS, Sentinel discovery, the
        // eviction check) nests deeper than the compiler's default query depth would
        // allow in every crate that awaits it.
        let starting: futures::future::BoxFuture<'_, Result<(Self, bool, Persistence)>> =
            Box::pin(async move {
                Self::open_unbounded(target, options, server)
                    .await
                    .map_err(|error| name_connect_timeout(error, connect_timeout))
            });
        tokio::time::timeout(connect_timeout, starting)
            .await
            .unwrap_or_else(|_| {
                Err(Error::connection(
                    BACKEND,
                    format!(
                        "{server} did not answer within the connect timeout \
                         ({connect_timeout:?}; `connect_timeout=` in the URL)"
                    ),
                ))
            })
    }

    async fn open_unbounded(
        target: Target,
        options: RedisOptions,
        server: &str,
    ) -> Result<(Self, bool, Persistence)> {
        #[cfg(feature = "tls")]
        crate::tls::install_crypto_provider();
        // Under Sentinel, the primary the Sentinels name now.
        // One plain attempt first, so that an unreachable server fails fast (the
        // connection manager retries with backoff, which suits reconnections only).
        // Under Redis Cluster, every node the URL names in turn until one answers.
        let probe_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(options.request_timeout))
            .set_connection_timeout(Some(options.connect_timeout));
        let attempts = match &target {
            Target::Cluster(nodes) => nodes.nodes().len(),
            _ => 1,
        };
        let mut attempt = 0;
        let (client, mut probe) = loop {
            attempt += 1;
            let client = target.client().await.map_err(redis_error)?;
            match client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await
            {
                Ok(probe) => break (client, probe),
                Err(error) if attempt < attempts => {
                    tracing::debug!(%error, server, "a cluster node did not answer; trying the next");
                }
                Err(error) => return Err(redis_error(error)),
            }
        };
        let db = client.get_connection_info().redis_settings().db();
        let keys = Keys::new(&options.namespace, db);
        // Dequeue call ids start with this instance id. Drawn at random rather than
        // from a server counter, which a restart without persistence would reset:
        // two live clients with one instance id could then retry each other's calls.
        let instance = crate::random::id();
        // A server that requires a login answers NOAUTH to a client that gave none:
        // say so before anything else is asked.
        redis::cmd("PING")
            .query_async::<Value>(&mut probe)
            .await
            .map_err(redis_error)?;
        let policy = crate::eviction::policy(&mut probe).await?;
        let mut evicting = crate::eviction::check(&options, server, policy.as_deref())?;
        let mut persistence = crate::persistence::read(&mut probe).await?;
        if let Target::Cluster(nodes) = &target {
            // Every node the URL names must keep keys too (a master that evicts loses
            // the entries of its slots), and durability is only as strong as its
            // weakest node's; one that does not answer now is left to the cluster
            // client, the probe having found the cluster.
            for node in nodes.nodes() {
                let Ok(mut connection) = node
                    .get_multiplexed_async_connection_with_config(&probe_config)
                    .await
                else {
                    continue;
                };
                let policy = crate::eviction::policy(&mut connection).await?;
                evicting |= crate::eviction::check(&options, server, policy.as_deref())?;
                persistence = persistence.weaker(crate::persistence::read(&mut connection).await?);
            }
        }
        let max_session_ttl = resolve_max_session_ttl(&options, &target, &persistence, server);
        let conn = match &target {
            Target::Server(client) => {
                drop(probe);
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(options.request_timeout))
                    .set_connection_timeout(Some(options.connect_timeout));
                let manager = ConnectionManager::new_with_config((**client).clone(), config)
                    .await
                    .map_err(redis_error)?;
                Connection::Server(manager)
            }
            Target::Cluster(nodes) => {
                drop(probe);
                Connection::Cluster(Arc::new(
                    ClusterLink::connect(Arc::clone(nodes))
                        .await
                        .map_err(redis_error)?,
                ))
            }
            Target::Sentinel(sentinels) => Connection::Sentinel(Arc::new(Following::new(
                Arc::clone(sentinels),
                crate::sentinel::primary_replid(&mut probe).await,
                probe,
                probe_config,
                options.clone(),
                db,
                !evicting && persistence.survives_restart(),
            ))),
        };
        tracing::debug!(backend = BACKEND, server, namespace = %options.namespace, "connected");
        // The scripts are composed here, once per process, so that no session's
        // deadline (counted from its first call's send) pays for it.
        std::sync::LazyLock::force(&crate::scripts::SCRIPTS);
        let ack = Ack::new(
            options.wait_replicas,
            options.wait_timeout,
            format!("{}{{{}wait", keys.channel_prefix(), options.namespace),
        );
        let shared = Self {
            conn,
            ack,
            notifier: Notifier::start(target, options.connect_timeout),
            keys,
            store: format!("{server}?namespace={}", options.namespace),
            max_session_ttl,
            stale_claim_ms: crate::call::millis(options.stale_claim),
            retry: RetryPolicy::within(options.request_timeout),
            namespace: options.namespace,
            instance,
            calls: AtomicU64::new(0),
        };
        Ok((shared, evicting, persistence))
    }
}

/// The bound on session TTLs of a backend with `options` on `target`: the one the URL
/// or the options give, none for `off`, and otherwise [`DEFAULT_MAX_SESSION_TTL`] where
/// the server may forget what it acknowledged: it does not fsync every write (read at
/// connect: `persistence`), or it fails over (Sentinel, Cluster) without replica
/// acknowledgement. The lock-delay is then on for the URL as first written, so one
/// holder at a time holds across a restart without anyone having asked for it.
fn resolve_max_session_ttl(
    options: &RedisOptions,
    target: &Target,
    persistence: &Persistence,
    server: &str,
) -> Option<Duration> {
    let forgets = !persistence.survives_restart()
        || (!matches!(target, Target::Server(_)) && options.wait_replicas == 0);
    let bound = options
        .max_session_ttl
        .or(forgets.then_some(DEFAULT_MAX_SESSION_TTL));
    if options.max_session_ttl == MaxSessionTtl::Default && forgets {
        tracing::info!(
            server,
            %persistence,
            max_session_ttl = ?DEFAULT_MAX_SESSION_TTL,
            "redis server may forget acknowledged writes (a restart without appendfsync \
             always, or a failover without wait_replicas): the lock-delay after it forgets \
             is on with the default bound on session TTLs; max_session_ttl= in the URL sets \
             another, max_session_ttl=off turns it off"
        );
    }
    bound
}
