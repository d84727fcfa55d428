//! The backend: the connection, the bucket, the sessions of this process, the
//! factories.

use std::path::PathBuf;
use std::sync::Arc;

use async_nats::{ConnectErrorKind, ConnectOptions};
use async_trait::async_trait;
use distsync_core::raw::name_connect_timeout;
use distsync_core::{
    Backend, Capabilities, Error, Name, Result, Session, SessionId, SessionOptions,
};
use tokio::sync::Notify;

use crate::barrier::{NatsBarrier, NatsDoubleBarrier};
use crate::config::NatsConfig;
use crate::counter::{NatsCounter, NatsLatch};
use crate::election::NatsElection;
use crate::lock::NatsLocker;
use crate::queue::NatsQueue;
use crate::rate_limiter::NatsRateLimiter;
use crate::rwlock::NatsRwLock;
use crate::semaphore::NatsSemaphore;
use crate::session::LeaseInner;
use crate::shared::Shared;
use crate::stm::NatsStm;
use crate::store::{Connection, Store};
use crate::unfair_lock::NatsUnfairLocker;
use crate::BACKEND;

/// The NATS JetStream backend: sessions are per-key TTLs renewed by compare-and-set,
/// primitives are lines of keys in one key-value bucket (see the crate docs).
pub struct NatsBackend {
    pub(crate) shared: Arc<Shared>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// The [`NatsBackend`] for a `nats://` or `tls://` URL (what `distsync::connect` wraps
/// in a [`distsync_core::Coordinator`] for these schemes).
///
/// # Errors
/// [`Error::InvalidUrl`] for a bad URL (its password redacted), or
/// [`backend_with_config`]'s.
///
/// # Cancel safety
/// Dropping the future drops the half-made connection; nothing is held yet.
pub async fn backend(url: &str) -> Result<NatsBackend> {
    backend_with_config(&url.parse()?).await
}

/// Like [`backend`], from an already parsed (or built) configuration: checks the
/// server (2.12 or later, with JetStream), and makes the bucket or checks that it has
/// what this backend relies on. The backend keeps two client connections: one for
/// everything but the sessions' renewals, and one for those (see `src/shared.rs`).
///
/// # Errors
/// [`Error::Connection`] when no server answers in time,
/// [`Error::Authentication`] for a refused login, [`Error::Unsupported`] for a
/// server below 2.12 or without JetStream, [`Error::InvalidArgument`] for a bucket
/// that lacks a setting (see `src/bucket.rs`), or the store's error.
///
/// # Cancel safety
/// Dropping the future drops the half-made connection; nothing is held yet.
pub async fn backend_with_config(config: &NatsConfig) -> Result<NatsBackend> {
    let config = config.clone();
    let connection = connect_client(&config).await?;
    let server = connection.client.server_info();
    crate::bucket::check_server(&server)?;
    // The server says how large a message it takes: values are held to that.
    let max_value_size = crate::max_value_size(server.max_payload);
    let store = Store::new(connection, config.bucket(), config.request_timeout());
    let deadline = tokio::time::Instant::now() + config.connect_timeout();
    let made = crate::bucket::ensure(&store, config.replicas(), deadline).await?;
    let renewals = store.through(connect_client(&config).await?);
    tracing::debug!(
        backend = BACKEND,
        servers = ?config.servers(),
        bucket = config.bucket(),
        tls = config.tls(),
        "connected"
    );
    // A write to a bucket of more than one replica is acknowledged once a majority of
    // them has it, so the loss of one server (its leader included) keeps it. Queues and
    // hand-overs are offered as on one replica: what a follower behind the leader
    // answers is settled by a compared write (see the crate docs, "Replicated buckets").
    let capabilities = crate::capabilities()
        .with_exclusive_across_restart(config.max_session_ttl().is_some())
        .with_survives_failover(made.replicas > 1)
        .with_max_value_size(max_value_size);
    Ok(NatsBackend {
        shared: Arc::new(Shared::new(config, store, renewals, made.created)),
        capabilities,
    })
}

impl NatsBackend {
    /// The configuration in use.
    pub fn config(&self) -> &NatsConfig {
        &self.shared.config
    }

    /// What every handle is made from.
    fn context(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn lease(&self, session: &Session) -> Result<Arc<LeaseInner>> {
        crate::session::lease_of(session, &self.shared).map(Arc::clone)
    }
}

// How each primitive is built: see the crate docs, "How it works".
distsync_core::impl_primitives!(NatsBackend {
    locker: NatsLocker,
    unfair_locker: NatsUnfairLocker,
    election: NatsElection,
    rwlock: NatsRwLock,
    semaphore: NatsSemaphore,
    double_barrier: NatsDoubleBarrier,
    queue: NatsQueue,
    barrier: NatsBarrier,
    counter: NatsCounter,
    latch: NatsLatch,
    rate_limiter: NatsRateLimiter,
    stm: NatsStm,
});

/// The client connection of `config`: its login or credentials file and TLS files.
async fn connect_client(config: &NatsConfig) -> Result<Connection> {
    let (connected, dropped) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let events = (Arc::clone(&connected), Arc::clone(&dropped));
    let mut options = ConnectOptions::new()
        .name("distsync")
        .event_callback(move |event| {
            let (connected, dropped) = (Arc::clone(&events.0), Arc::clone(&events.1));
            async move {
                match event {
                    async_nats::Event::Connected => connected.notify_waiters(),
                    async_nats::Event::Disconnected => dropped.notify_waiters(),
                    _ => {}
                }
            }
        })
        .connection_timeout(config.connect_timeout())
        .request_timeout(Some(config.request_timeout()));
    if let Some((user, password)) = config.login() {
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    if let Some(creds) = config.creds_file() {
        options = options.credentials_file(creds).await.map_err(|error| {
            Error::InvalidArgument(format!("the credentials file {creds}: {error}"))
        })?;
    }
    if let Some(files) = config.tls_files() {
        options = options
            .require_tls(true)
            .add_root_certificates(PathBuf::from(files.ca()));
        if let Some((cert, key)) = files.client() {
            options = options.add_client_certificate(PathBuf::from(cert), PathBuf::from(key));
        }
    }
    let connecting = options.connect(config.client_urls());
    let connect_timeout = config.connect_timeout();
    let client = tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| {
            Error::connection(
                BACKEND,
                format!(
                    "no nats server answered within the connect timeout \
                     ({connect_timeout:?}; `connect_timeout=` in the URL)"
                ),
            )
        })?;
    let client = client.map_err(|error| match error.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            Error::authentication(BACKEND, error.to_string())
        }
        ConnectErrorKind::ServerParse => Error::InvalidArgument(error.to_string()),
        _ => name_connect_timeout(Error::connection(BACKEND, error), connect_timeout),
    })?;
    Ok(Connection {
        client,
        connected,
        dropped,
    })
}

#[async_trait]
impl Backend for NatsBackend {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        crate::session::open(&self.shared, &options).await
    }

    /// A session of this process closes (its keys purged at once); another
    /// process's is ended by purging the keys that carry its id, which its owner's
    /// next renewal finds refused.
    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        match self.shared.session(id.0) {
            Some(lease) => lease.close().await,
            None => crate::session::revoke_elsewhere(&self.shared, id.0).await,
        }
    }

    /// Every kind's keys in one listing, read by their layouts (see `src/export.rs`).
    async fn export(&self) -> Result<distsync_core::migrate::Snapshot> {
        crate::export::export(&self.shared).await
    }

    /// Every kind's keys in one listing (see `src/status.rs`).
    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, prefix, false).await
    }

    /// With a reading of the server's clock (see `src/status.rs`).
    async fn status_with_time_left(
        &self,
        prefix: &str,
    ) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, prefix, true).await
    }

    /// The keys of one name's lines only (see `src/status.rs`): what breaks, release
    /// requests and hand-overs read, in a time that does not grow with the bucket.
    async fn status_of(&self, name: &Name) -> Result<distsync_core::status::StatusReport> {
        crate::status::status_of(&self.shared, name).await
    }

    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::count_prefix(&self.shared, prefix).await
    }

    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::purge_prefix(&self.shared, prefix).await
    }

    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        crate::facts::describe(&self.shared).await
    }
}
