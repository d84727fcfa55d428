//! [`RedisBackend`] and its factories: connecting (the state itself is opened by
//! [`crate::store`]) and building each primitive over the shared connection state.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::migrate::Snapshot;
use distsync_core::{Backend, Capabilities, Name, Result, Session, SessionId, SessionOptions};

use crate::barrier::RedisBarrier;
use crate::capabilities::{measured, Topology};
use crate::cluster::ClusterNodes;
use crate::config::RedisConfig;
use crate::counter::{RedisCounter, RedisLatch};
use crate::double_barrier::RedisDoubleBarrier;
use crate::election::RedisElection;
use crate::lock::RedisLock;
use crate::options::RedisOptions;
use crate::persistence::Persistence;
use crate::queue::RedisQueue;
use crate::rate_limiter::RedisRateLimiter;
use crate::rwlock::RedisRwLock;
use crate::semaphore::RedisSemaphore;
use crate::sentinel::Sentinels;
use crate::session::RedisLease;
use crate::stm::RedisStm;
use crate::store::Shared;
use crate::target::Target;
use crate::unfair_lock::RedisUnfairLock;

/// Connects to the Redis server `url` names and returns the backend itself.
///
/// # Cancel safety
/// This function is cancel-safe: a dropped call leaves nothing behind.
///
/// # Errors
/// [`Error::InvalidUrl`] for a bad URL (password masked), [`Error::Unsupported`] for
/// a Redis Cluster over TLS, and as [`backend_with_config`].
///
/// [`Error::InvalidUrl`]: distsync_core::Error::InvalidUrl
/// [`Error::Unsupported`]: distsync_core::Error::Unsupported
pub async fn backend(url: &str) -> Result<RedisBackend> {
    backend_with_config(&RedisConfig::parse(url)?).await
}

/// Like [`backend`], from a parsed configuration (whose timeouts may have been
/// changed in code with [`RedisConfig::with_connect_timeout`] and
/// [`RedisConfig::with_request_timeout`]).
///
/// # Cancel safety
/// This function is cancel-safe: a dropped call leaves nothing behind.
///
/// # Errors
/// [`Error::InvalidArgument`] for certificate or key files that cannot be read or
/// used; [`Error::Unsupported`] for `rediss://` in a build without the `tls`
/// feature; [`Error::Connection`] when the server cannot be reached, fails the TLS
/// handshake (an untrusted server certificate, a client certificate the server
/// refuses) or does not answer within the connect timeout;
/// [`Error::Authentication`] for a wrong user or password; [`Error::InvalidArgument`]
/// when the server may evict keys (its `maxmemory-policy` is not `noeviction`, or
/// cannot be read) and the URL does not say `allow_eviction=true`.
///
/// [`Error::InvalidArgument`]: distsync_core::Error::InvalidArgument
/// [`Error::Unsupported`]: distsync_core::Error::Unsupported
/// [`Error::Connection`]: distsync_core::Error::Connection
/// [`Error::Authentication`]: distsync_core::Error::Authentication
pub async fn backend_with_config(config: &RedisConfig) -> Result<RedisBackend> {
    let target = if let Some(sentinels) = Sentinels::of_url(config)? {
        Target::Sentinel(Arc::new(sentinels))
    } else if let Some(nodes) = ClusterNodes::of_url(config, config.options())? {
        Target::Cluster(Arc::new(nodes))
    } else {
        Target::Server(Box::new(config.client()?))
    };
    RedisBackend::start(target, config.options().clone(), config.server().to_owned()).await
}

/// A backend over a [`redis::Client`] of your own (built with its TLS
/// certificates, credentials and database), with `options` for the namespace,
/// eviction and timeouts. The client must address a single server or a primary
/// (not a Cluster), and may connect any number of times: the backend opens a
/// multiplexed connection (through a connection manager, which reconnects) and a
/// pub/sub connection for wake-ups. Connects and checks the server as
/// [`backend`] does. (The etcd and PostgreSQL crates offer theirs alike:
/// `backend_from_client`, `backend_from_pool`.)
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use distsync::store::redis::{backend_from_client, redis, RedisOptions};
/// let client = redis::Client::open("redis://127.0.0.1:6379/0").expect("a valid URL");
/// let backend = backend_from_client(client, RedisOptions::new().namespace("myapp:")).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`backend_with_config`].
///
/// # Cancel safety
/// This function is cancel-safe: a dropped call leaves nothing behind.
pub async fn backend_from_client(
    client: redis::Client,
    options: RedisOptions,
) -> Result<RedisBackend> {
    let info = client.get_connection_info();
    let scheme = match info.addr() {
        redis::ConnectionAddr::TcpTls { .. } => "rediss",
        _ => "redis",
    };
    // Host, port and database only: never the credentials.
    let server = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
    RedisBackend::start(Target::Server(Box::new(client)), options, server).await
}

/// The Redis backend (`redis://host:port[/db][?namespace=...]`).
///
/// Cheap to clone; clones share one multiplexed connection (reconnecting on failure)
/// and one pub/sub connection for wake-ups.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    persistence: Persistence,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("store", &self.shared.store)
            .finish()
    }
}

impl RedisBackend {
    async fn start(target: Target, options: RedisOptions, server: String) -> Result<Self> {
        let topology = match &target {
            Target::Server(_) => Topology::Server,
            Target::Sentinel(_) => Topology::Sentinel,
            Target::Cluster(_) => Topology::Cluster,
        };
        let wait_replicas = options.wait_replicas;
        let (shared, evicting, persistence) = Shared::open(target, options, &server).await?;
        let capabilities = measured(
            topology,
            wait_replicas,
            evicting,
            persistence.survives_restart(),
            shared.max_session_ttl.is_some(),
        );
        if capabilities.survives_restart {
            tracing::info!(
                server,
                %persistence,
                survives_restart = true,
                "redis server fsyncs its append-only file on every write: acknowledged \
                 grants, releases and queue items survive its restart"
            );
        } else {
            tracing::info!(
                server,
                %persistence,
                survives_restart = false,
                "redis server does not fsync every write (survives_restart needs \
                 appendonly yes and appendfsync always): a restart may lose acknowledged \
                 grants, releases and queue items, and grant a lock whose old holder \
                 learns of the loss only at its next renewal"
            );
        }
        Ok(Self {
            shared: Arc::new(shared),
            capabilities,
            persistence,
        })
    }

    /// The key prefix of this backend.
    pub fn namespace(&self) -> &str {
        self.shared.namespace()
    }

    /// What every handle is made from.
    fn context(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The handles take the session itself: this only checks that it is this
    /// backend's.
    fn lease(&self, session: &Session) -> Result<()> {
        RedisLease::of(session, &self.shared).map(drop)
    }

    /// The server's persistence settings, read at connect (under Redis Cluster, the
    /// weakest among the nodes the URL names; under Sentinel, the primary's at
    /// connect). [`Primitives::capabilities`](distsync_core::raw::Primitives::capabilities)
    /// declares `survives_restart` from them.
    pub fn persistence(&self) -> &Persistence {
        &self.persistence
    }
}

// The unfair lock (`src/unfair_lock.rs`) takes a free lock in one script call and
// lets it go in one; it and the fair lock of the same name exclude each other.
distsync_core::impl_primitives!(RedisBackend {
    locker: RedisLock,
    unfair_locker: RedisUnfairLock,
    election: RedisElection,
    rwlock: RedisRwLock,
    semaphore: RedisSemaphore,
    double_barrier: RedisDoubleBarrier,
    queue: RedisQueue,
    barrier: RedisBarrier,
    counter: RedisCounter,
    latch: RedisLatch,
    rate_limiter: RedisRateLimiter,
    stm: RedisStm,
});

#[async_trait]
impl Backend for RedisBackend {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        RedisLease::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        crate::session::revoke(&self.shared, id.0, None, None).await
    }

    /// Queues, STM keys, held barriers and live holds of the namespace; see
    /// `src/export.rs` for what is read, how consistently, and what is left out.
    async fn export(&self) -> Result<Snapshot> {
        crate::export::export(&self.shared, self.shared.namespace()).await
    }

    /// Who holds what under the namespace: a `SCAN` of the namespace and one read-only
    /// script (the crate's `status.rs` says what is read).
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, self.shared.namespace(), prefix, false).await
    }

    /// Under Redis Cluster, one `PTTL` per session shown (see `src/status.rs`).
    async fn status_with_time_left(
        &self,
        prefix: &str,
    ) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, self.shared.namespace(), prefix, true).await
    }

    /// The lines of `name` alone: one read-only script call in the name's hash slot,
    /// no scan (`name_status.rs`), so that breaks, release requests and hand-overs
    /// work under Redis Cluster too.
    async fn status_of(&self, name: &Name) -> Result<distsync_core::status::StatusReport> {
        crate::name_status::status_of(&self.shared, name).await
    }

    /// The keys of the names under `prefix`: two `SCAN MATCH` patterns, each key
    /// checked exactly (`purge.rs`); on a Redis Cluster on every master (`scan.rs`).
    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::count_prefix(&self.shared, prefix).await
    }

    /// The server's version, eviction policy and persistence (`facts.rs`).
    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        crate::facts::describe(&self.shared, &self.persistence).await
    }

    /// Unlinks those keys, a batch per `UNLINK` (`purge.rs`).
    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::purge_prefix(&self.shared, prefix).await
    }
}
