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
use redis::{AsyncConnectionConfig, Script, ScriptInvocation, Value};

use crate::error::redis_error;
use crate::keys::Keys;
use crate::notify::Notifier;
use crate::session::RedisLease;
use crate::url::RedisUrl;
use crate::BACKEND;

/// How long one command may take before the connection counts as broken.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the Redis backend offers and claims on a server that never evicts keys
/// (`maxmemory-policy noeviction`, which [`RedisBackend::connect`] checks); see the
/// crate documentation for why.
pub fn capabilities() -> Capabilities {
    Capabilities {
        survives_restart: false,
        linearizable: false,
        ..Capabilities::all(BACKEND, Duration::from_millis(100))
    }
}

/// What the Redis backend claims on a server that may evict keys, accepted with
/// `allow_eviction=true` in the URL: [`capabilities`] without `fencing` (an evicted
/// counter starts again) and `fifo_waiters` (an evicted waiter line loses its order).
/// Mutual exclusion itself is weakened too, which no flag expresses: an evicted entry
/// lets the next waiter in while its holder learns of the loss only at its next
/// renewal; and evicted queue items are lost.
pub fn capabilities_under_eviction() -> Capabilities {
    Capabilities {
        fencing: false,
        fifo_waiters: false,
        ..capabilities()
    }
}

/// What every primitive of one backend shares.
pub(crate) struct Shared {
    conn: ConnectionManager,
    pub(crate) notifier: Notifier,
    pub(crate) keys: Keys,
    namespace: String,
    /// Identifies the store (server, database, namespace): sessions of another store
    /// are refused.
    store: String,
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
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Starts a call of `script`, with the channel prefix as `ARGV[1]`.
    pub(crate) fn script(&self, script: &'static Script) -> ScriptInvocation<'static> {
        let mut call = script.prepare_invoke();
        call.arg(self.keys.channel_prefix());
        call
    }

    /// Runs a script call (one round trip; `EVALSHA`, loading the script if needed).
    pub(crate) async fn eval(&self, call: &ScriptInvocation<'_>) -> Result<Value> {
        call.invoke_async::<Value>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    /// Runs one command.
    pub(crate) async fn query(&self, command: &redis::Cmd) -> Result<Value> {
        command
            .query_async::<Value>(&mut self.conn())
            .await
            .map_err(redis_error)
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
    /// Connects to the server `url` names.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a bad URL, [`Error::Unsupported`] for `rediss://`,
    /// [`Error::Connection`] when the server cannot be reached,
    /// [`Error::InvalidArgument`] when the server may evict keys (its
    /// `maxmemory-policy` is not `noeviction`, or cannot be read) and the URL does not
    /// say `allow_eviction=true` (see [`RedisUrl`]).
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves nothing behind.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_to(&RedisUrl::parse(url)?).await
    }

    /// Connects to a parsed URL.
    ///
    /// # Errors
    /// As [`RedisBackend::connect`].
    ///
    /// Cancel-safety: as [`RedisBackend::connect`].
    pub async fn connect_to(url: &RedisUrl) -> Result<Self> {
        let client = url.client()?;
        let keys = Keys::new(url.namespace(), url.db());
        // One plain attempt first, so that an unreachable server fails fast (the
        // connection manager retries with backoff, which suits reconnections only).
        let mut probe = client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECTION_TIMEOUT)),
            )
            .await
            .map_err(redis_error)?;
        // Dequeue call ids start with this instance id. Drawn at random rather than
        // from a server counter, which a restart without persistence would reset:
        // two live clients with one instance id could then retry each other's calls.
        let instance = crate::random::id();
        let policy = crate::eviction::policy(&mut probe).await?;
        let evicting = crate::eviction::check(url, policy.as_deref())?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(redis_error)?;
        let shared = Shared {
            conn,
            notifier: Notifier::start(client),
            keys,
            namespace: url.namespace().to_owned(),
            store: format!("{}?namespace={}", url.server(), url.namespace()),
            instance,
            calls: AtomicU64::new(0),
        };
        Ok(Self {
            shared: Arc::new(shared),
            capabilities: if evicting {
                capabilities_under_eviction()
            } else {
                capabilities()
            },
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

    fn stm(&self) -> Result<Arc<dyn Stm>> {
        Ok(Arc::new(crate::stm::RedisStm::new(&self.shared)))
    }

    /// Queues, STM keys, held barriers and live holds of the namespace; see
    /// [`crate::export`] for what is read, how consistently, and what is left out.
    async fn export(&self) -> Result<Snapshot> {
        crate::export::export(&self.shared, &self.shared.namespace).await
    }
}
