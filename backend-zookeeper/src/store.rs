//! What every session and primitive of one backend shares: the configuration, the
//! way to open a ZooKeeper session, and the sessions this process opened.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use distsync_core::{Error, Result};
use zookeeper_client as zk;

use crate::config::ZkConfig;
use crate::error::map;
use crate::BACKEND;

/// A session this process opened, as the registry sees it: something to close (for
/// `revoke_session`).
#[async_trait::async_trait]
pub(crate) trait OpenSession: Send + Sync {
    /// Ends the session in the store.
    async fn close(&self) -> Result<()>;
}

/// What every session and primitive of one backend shares.
pub(crate) struct Shared {
    pub(crate) config: ZkConfig,
    /// The sessions this process opened, for `revoke_session`.
    sessions: Mutex<HashMap<u64, Weak<dyn OpenSession>>>,
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

    /// A store for `config`, with no session yet.
    pub(crate) fn new(config: ZkConfig) -> Self {
        Self {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The session `id` of this process, if it opened one.
    pub(crate) fn session(&self, id: u64) -> Option<Weak<dyn OpenSession>> {
        self.sessions().get(&id).cloned()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<dyn OpenSession>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register_session(&self, id: u64, lease: Weak<dyn OpenSession>) {
        let mut sessions = self.sessions();
        sessions.retain(|_, lease| lease.strong_count() > 0);
        sessions.insert(id, lease);
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        self.sessions().remove(&id);
    }
}
