//! [`RedisBackend`]: the connection, the pub/sub notifier and the primitive factories.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::migrate::Snapshot;
use distsync_core::{
    Backend, Barrier, Capabilities, DoubleBarrier, Election, Error, Locker, Name, Queue, Result,
    RwLock, Session, SessionId, SessionOptions, Stm,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Script, Value};

use crate::call::{Ack, Call};
use crate::sentinel::{Connection, Following, Sentinels, Target};

use crate::error::redis_error;
use crate::keys::Keys;
use crate::notify::Notifier;
use crate::options::RedisOptions;
use crate::session::RedisLease;
use crate::url::RedisUrl;
use crate::BACKEND;

/// What the Redis backend offers and claims on a server that never evicts keys
/// (`maxmemory-policy noeviction`, which [`RedisBackend::connect`] checks); see the
/// crate documentation for why.
pub fn capabilities() -> Capabilities {
    Capabilities {
        survives_restart: false,
        linearizable: false,
        // One server: a failover to a replica (done by hand, or under Sentinel without
        // replica acknowledgement, see `capabilities_under_sentinel`) may lose what
        // was acknowledged.
        survives_failover: false,
        // `LockGuard::put_if_held`: one script checks the grant and writes
        // (`crate::guarded`).
        guarded_writes: true,
        // `Queue::receive`: a hold key in the session's registry (`crate::queue`).
        reliable_delivery: true,
        ..Capabilities::all(BACKEND, Duration::from_millis(100))
    }
}

/// What the Redis backend claims on a server that may evict keys, accepted with
/// `allow_eviction=true` in the URL: [`capabilities`] without `fencing` (an evicted
/// counter starts again), `fifo_waiters` (an evicted waiter line loses its order) and
/// `reliable_delivery` (an evicted hold key or held-item record loses its item).
/// Mutual exclusion itself is weakened too, which no flag expresses: an evicted entry
/// lets the next waiter in while its holder learns of the loss only at its next
/// renewal; and evicted queue items are lost.
pub fn capabilities_under_eviction() -> Capabilities {
    Capabilities {
        fencing: false,
        fifo_waiters: false,
        reliable_delivery: false,
        ..capabilities()
    }
}

/// What the Redis backend claims under Sentinel (`redis+sentinel://`): with replica
/// acknowledgement (`wait_replicas` of 1 or more) [`capabilities`] plus
/// `survives_failover`; without it, neither `survives_failover` nor `fencing` (the
/// promoted replica may lack the last increments of a fencing-token counter, so
/// tokens can go backwards), and two holders of one lock become possible across a
/// failover. See the crate docs, "Sentinel and replica acknowledgement".
pub fn capabilities_under_sentinel(wait_replicas: u32) -> Capabilities {
    if wait_replicas > 0 {
        Capabilities {
            survives_failover: true,
            ..capabilities()
        }
    } else {
        Capabilities {
            fencing: false,
            ..capabilities()
        }
    }
}

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
}

impl Shared {
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
    pub(crate) fn script(&self, script: &'static Script) -> Call {
        let mut call = Call::new(script);
        call.arg(self.keys.channel_prefix());
        call
    }

    /// Runs a script call (one round trip; `EVALSHA`, loading the script if needed),
    /// acknowledged by replicas when the URL asks for it ([`crate::call`]).
    pub(crate) async fn eval(&self, call: &Call) -> Result<Value> {
        crate::call::eval(&mut self.conn(), call, self.ack.as_ref()).await
    }

    /// Runs one command, acknowledged by replicas when the URL asks for it.
    pub(crate) async fn query(&self, command: &redis::Cmd) -> Result<Value> {
        crate::call::query(&mut self.conn(), command, self.ack.as_ref()).await
    }
}

/// The Redis backend (`redis://host:port[/db][?namespace=...]`).
///
/// Cheap to clone; clones share one multiplexed connection (reconnecting on failure)
/// and one pub/sub connection for wake-ups.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("store", &self.shared.store)
            .finish()
    }
}

impl RedisBackend {
    /// Connects to the server `url` names (see [`RedisUrl`] for the URL forms: TLS,
    /// credentials, timeouts).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a bad URL; [`Error::InvalidArgument`] for certificate
    /// or key files that cannot be read or used; [`Error::Unsupported`] for
    /// `rediss://` in a build without the `tls` feature; [`Error::Connection`] when
    /// the server cannot be reached, fails the TLS handshake (an untrusted server
    /// certificate, a client certificate the server refuses) or does not answer within
    /// the connect timeout; [`Error::Authentication`] for a wrong user or password;
    /// [`Error::InvalidArgument`]
    /// when the server may evict keys (its `maxmemory-policy` is not `noeviction`, or
    /// cannot be read) and the URL does not say `allow_eviction=true`.
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves nothing behind.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_to(&RedisUrl::parse(url)?).await
    }

    /// Connects to a parsed URL (whose timeouts may have been changed in code with
    /// [`RedisUrl::with_connect_timeout`] and [`RedisUrl::with_request_timeout`]).
    ///
    /// # Errors
    /// As [`RedisBackend::connect`].
    ///
    /// Cancel-safety: as [`RedisBackend::connect`].
    pub async fn connect_to(url: &RedisUrl) -> Result<Self> {
        let target = match Sentinels::of_url(url)? {
            Some(sentinels) => Target::Sentinel(Arc::new(sentinels)),
            None => Target::Server(Box::new(url.client()?)),
        };
        Self::start(target, url.options().clone(), url.server().to_owned()).await
    }

    /// A backend over a [`redis::Client`] of your own (built with its TLS
    /// certificates, credentials and database), with `options` for the namespace,
    /// eviction and timeouts. The client must address a single server or a primary
    /// (not a Cluster), and may connect any number of times: the backend opens a
    /// multiplexed connection (through a connection manager, which reconnects) and a
    /// pub/sub connection for wake-ups. Connects and checks the server as
    /// [`RedisBackend::connect`] does.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
    /// use distsync_redis::{redis, RedisBackend, RedisOptions};
    /// let client = redis::Client::open("redis://127.0.0.1:6379/0").expect("a valid URL");
    /// let backend = RedisBackend::from_client(client, RedisOptions::new().namespace("myapp:")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`RedisBackend::connect`], but for the URL errors.
    ///
    /// Cancel-safety: as [`RedisBackend::connect`].
    pub async fn from_client(client: redis::Client, options: RedisOptions) -> Result<Self> {
        let info = client.get_connection_info();
        let scheme = match info.addr() {
            redis::ConnectionAddr::TcpTls { .. } => "rediss",
            _ => "redis",
        };
        // Host, port and database only: never the credentials.
        let server = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
        Self::start(Target::Server(Box::new(client)), options, server).await
    }

    async fn start(target: Target, options: RedisOptions, server: String) -> Result<Self> {
        let connect_timeout = options.connect_timeout;
        // Boxed and type-erased: the connect path (TLS, Sentinel discovery, the
        // eviction check) nests deeper than the compiler's default query depth would
        // allow in every crate that awaits it.
        let starting: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self>> + Send + '_>,
        > = Box::pin(Self::start_unbounded(target, options, &server));
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

    async fn start_unbounded(target: Target, options: RedisOptions, server: &str) -> Result<Self> {
        #[cfg(feature = "tls")]
        crate::tls::install_crypto_provider();
        // Under Sentinel, the primary the Sentinels name now.
        let client = target.client().await.map_err(redis_error)?;
        let db = client.get_connection_info().redis_settings().db();
        let keys = Keys::new(&options.namespace, db);
        // One plain attempt first, so that an unreachable server fails fast (the
        // connection manager retries with backoff, which suits reconnections only).
        let probe_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(options.request_timeout))
            .set_connection_timeout(Some(options.connect_timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(redis_error)?;
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
        let evicting = crate::eviction::check(&options, server, policy.as_deref())?;
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
            Target::Sentinel(sentinels) => Connection::Sentinel(Arc::new(Following::new(
                Arc::clone(sentinels),
                probe,
                probe_config,
                options.clone(),
                db,
            ))),
        };
        tracing::debug!(backend = BACKEND, server, namespace = %options.namespace, "connected");
        let capabilities = match (&target, evicting) {
            (_, true) => capabilities_under_eviction(),
            (Target::Sentinel(_), false) => capabilities_under_sentinel(options.wait_replicas),
            (Target::Server(_), false) => capabilities(),
        };
        let ack = Ack::new(
            options.wait_replicas,
            options.wait_timeout,
            format!("{}{{{}wait", keys.channel_prefix(), options.namespace),
        );
        let shared = Shared {
            conn,
            ack,
            notifier: Notifier::start(target, options.connect_timeout),
            keys,
            store: format!("{server}?namespace={}", options.namespace),
            namespace: options.namespace,
            instance,
            calls: AtomicU64::new(0),
        };
        Ok(Self {
            shared: Arc::new(shared),
            capabilities,
        })
    }

    /// The key prefix of this backend.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// The session's lease, if the session was granted by this store.
    pub(crate) fn lease<'s>(&self, session: &'s Session) -> Result<&'s RedisLease> {
        let lease = session.lease_for::<RedisLease>(BACKEND)?;
        if lease.shared().store != self.shared.store {
            return Err(Error::InvalidArgument(format!(
                "session {} belongs to the store {}, not to {}",
                session.id(),
                lease.shared().store,
                self.shared.store
            )));
        }
        Ok(lease)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        RedisLease::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        crate::session::revoke(&self.shared, id.0, None).await
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        self.lease(session)?;
        Ok(Box::new(crate::lock::RedisLock::new(
            &self.shared,
            session,
            name,
        )))
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        self.lease(session)?;
        Ok(Box::new(crate::election::RedisElection::new(
            &self.shared,
            session,
            name,
        )))
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        self.lease(session)?;
        Ok(Box::new(crate::rwlock::RedisRwLock::new(
            &self.shared,
            session,
            name,
        )))
    }

    fn queue(&self, name: Name) -> Result<Box<dyn Queue>> {
        Ok(Box::new(crate::queue::RedisQueue::new(&self.shared, name)))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        Ok(Box::new(crate::barrier::RedisBarrier::new(
            &self.shared,
            name,
        )))
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: usize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        self.lease(session)?;
        if count == 0 {
            return Err(Error::InvalidArgument(
                "a double barrier needs a count of at least 1".into(),
            ));
        }
        Ok(Box::new(crate::double_barrier::RedisDoubleBarrier::new(
            &self.shared,
            session,
            name,
            count,
        )))
    }

    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: usize,
    ) -> Result<Box<dyn distsync_core::Semaphore>> {
        self.lease(session)?;
        Ok(Box::new(crate::semaphore::RedisSemaphore::new(
            &self.shared,
            session,
            name,
            permits,
        )?))
    }

    fn stm(&self) -> Result<Stm> {
        Ok(Stm::new(Arc::new(crate::stm::RedisStm::new(&self.shared))))
    }

    /// Queues, STM keys, held barriers and live holds of the namespace; see
    /// [`crate::export`] for what is read, how consistently, and what is left out.
    async fn export(&self) -> Result<Snapshot> {
        crate::export::export(&self.shared, &self.shared.namespace).await
    }

    /// Who holds what under the namespace: a `SCAN` of the namespace and one read-only
    /// script (the crate's `status.rs` says what is read).
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, &self.shared.namespace, prefix).await
    }
}
