//! The backend: the configuration, the sessions of this process, the factories.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::{Barrier, DoubleBarrier, Election, Locker, Queue, RwLock};
use distsync_core::{
    Backend, Capabilities, Error, Name, Result, Session, SessionId, SessionOptions, Stm,
};
use zookeeper_client as zk;

use crate::config::ZkConfig;
use crate::error::map;
use crate::session::LeaseInner;
use crate::BACKEND;

/// What every session and primitive of one backend shares.
pub(crate) struct Shared {
    pub(crate) config: ZkConfig,
    /// The sessions this process opened, for `revoke_session`.
    sessions: Mutex<HashMap<u64, Weak<LeaseInner>>>,
}

impl Shared {
    /// Opens a ZooKeeper session of `timeout` (its own connection), logged in.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<zk::Client> {
        let connector = zk::Client::connector()
            .with_session_timeout(timeout)
            .with_connection_timeout(self.config.connect_timeout());
        let connector = match self.config.digest() {
            Some(digest) => connector.with_auth("digest", &digest),
            None => connector,
        };
        let connect_timeout = self.config.connect_timeout();
        match tokio::time::timeout(
            connect_timeout,
            connector.connect(&self.config.connect_string()),
        )
        .await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(match map(error) {
                Error::Backend { source, .. } => Error::connection(BACKEND, source),
                other => other,
            }),
            Err(_) => Err(Error::connection(
                BACKEND,
                format!(
                    "no zookeeper session within {connect_timeout:?} (servers {})",
                    self.config.connect_string()
                ),
            )),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<LeaseInner>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register_session(&self, id: u64, lease: Weak<LeaseInner>) {
        let mut sessions = self.sessions();
        sessions.retain(|_, lease| lease.strong_count() > 0);
        sessions.insert(id, lease);
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        self.sessions().remove(&id);
    }
}

/// The ZooKeeper backend: sessions are ZooKeeper sessions, primitives are Curator's
/// recipes (see the crate docs).
pub struct ZkBackend {
    shared: Arc<Shared>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkBackend")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl ZkBackend {
    /// Connects with `config`: opens one short session to check that the servers
    /// answer and the login is accepted, then closes it.
    ///
    /// # Errors
    /// [`Error::Connection`] when no server answers in time,
    /// [`Error::Authentication`] for a refused login, or the store's error.
    ///
    /// # Cancel safety
    /// Dropping the future drops the probe session (closed by the client).
    pub async fn connect(config: ZkConfig) -> Result<Self> {
        let shared = Arc::new(Shared {
            config,
            sessions: Mutex::new(HashMap::new()),
        });
        let probe = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
        // A digest login is checked by the server only when a request needs it: ask
        // for the root's stat so a wrong password fails here rather than later.
        probe.check_stat("/").await.map_err(map)?;
        drop(probe);
        Ok(Self {
            shared,
            capabilities: crate::capabilities(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ZkConfig {
        &self.shared.config
    }

    fn lease<'s>(&self, session: &'s Session) -> Result<&'s Arc<LeaseInner>> {
        use distsync_core::raw::SessionStoreSide as _;
        let lease = session.lease_for::<crate::session::ZkLease>(BACKEND)?;
        if !Arc::ptr_eq(&lease.inner.shared, &self.shared) {
            return Err(Error::InvalidArgument(format!(
                "session {} was granted by another zookeeper backend",
                session.id()
            )));
        }
        Ok(&lease.inner)
    }
}

#[async_trait]
impl Backend for ZkBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        crate::session::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        let known = self.shared.sessions().get(&id.0).cloned();
        match known {
            Some(lease) => match lease.upgrade() {
                // In this process: ZooKeeper ends a session only for whoever has its
                // password, which is the owner's client.
                Some(lease) => lease.close().await,
                // Dropped: its client closed the session.
                None => Ok(()),
            },
            None => Err(Error::unsupported(
                BACKEND,
                "revoking a session of another process (ZooKeeper needs its password)",
            )),
        }
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        let lease = Arc::clone(self.lease(session)?);
        Ok(Box::new(crate::lock::ZkLocker::new(
            session.clone(),
            lease,
            name,
        )))
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        let _ = (session, name);
        Err(Error::unsupported(BACKEND, "election"))
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        let _ = (session, name);
        Err(Error::unsupported(BACKEND, "rwlock"))
    }

    fn queue(&self, name: Name) -> Result<Box<dyn Queue>> {
        let _ = name;
        Err(Error::unsupported(BACKEND, "queue"))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        let _ = name;
        Err(Error::unsupported(BACKEND, "barrier"))
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        let _ = (session, name, count);
        Err(Error::unsupported(BACKEND, "double barrier"))
    }

    fn stm(&self) -> Result<Stm> {
        Err(Error::unsupported(BACKEND, "stm"))
    }
}
