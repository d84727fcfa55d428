//! What every session and primitive of one backend shares: the configuration, the
//! way to open a ZooKeeper session, and the sessions this process opened.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::raw::{name_connect_timeout, refusing_hosts, RetryPolicy};
use distsync_core::{Error, Result};
use zookeeper_client as zk;

use crate::amnesia::Amnesia;
use crate::config::ZkConfig;
use crate::error::map;
use crate::BACKEND;

/// How a client session is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// Trying the servers again until the session's timeout, closed as it is dropped.
    Patient,
    /// As `Patient`, left open as it is dropped.
    Detached,
    /// One pass over the servers, then the client's error.
    OnePass,
}

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
    /// Telling that the store forgot (see `src/amnesia.rs`).
    pub(crate) amnesia: Amnesia,
}

impl Shared {
    /// Bounds a one-shot call (`try_lock`, `try_acquire`, ...): its requests ride
    /// connection losses while the session may live, so without a bound a call into a
    /// silent partition would wait for the session to end. It gets core's one-shot
    /// budget, cut to the request timeout, and one request timeout for the attempt in
    /// flight; then its transient error. A call dropped there leaves nothing: a
    /// contender's node is deleted in the background by its protected prefix.
    pub(crate) async fn one_shot<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let timeout = self.config.request_timeout();
        let limit = RetryPolicy::within(timeout).budget() + timeout;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(Error::connection(
                BACKEND,
                format!("{what}: no answer within {limit:?} (the request timeout, `timeout=`)"),
            ))
        })
    }

    /// Opens a ZooKeeper session of `timeout` (its own connection), logged in.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<zk::Client> {
        self.within_connect_timeout(self.open_client(timeout, Opening::Patient))
            .await
    }

    /// As [`Shared::connect`], for a session the client leaves open as it is dropped
    /// (it lasts `timeout` past the drop: the hold node's, see `src/amnesia.rs`).
    pub(crate) async fn connect_detached(&self, timeout: Duration) -> Result<zk::Client> {
        self.within_connect_timeout(self.open_client(timeout, Opening::Detached))
            .await
    }

    /// As [`Shared::connect`], for the short session that checks the servers as the
    /// backend connects: when every server refuses the connection, it fails at once, as
    /// a refused port does on every store (the client would try them again until the
    /// session's timeout). Servers that accept and do not serve yet (a quorum still
    /// electing its leader) are waited for, within the connect timeout.
    pub(crate) async fn connect_probe(&self, timeout: Duration) -> Result<zk::Client> {
        self.within_connect_timeout(async {
            match self.open_client(timeout, Opening::OnePass).await {
                Ok(client) => Ok(client),
                Err(error) => match refusing_hosts(self.config.hosts()).await {
                    Some(refusals) => Err(Error::connection(
                        BACKEND,
                        format!("every server refused the connection ({refusals})"),
                    )),
                    None => {
                        tracing::debug!(%error, "no session on a first pass over the servers; waiting for one");
                        self.open_client(timeout, Opening::Patient).await
                    }
                },
            }
        })
        .await
    }

    /// Runs `opening` for at most the connect timeout: a connection error names the
    /// option that bounds it, and the timeout running out says so.
    async fn within_connect_timeout(
        &self,
        opening: impl std::future::Future<Output = Result<zk::Client>>,
    ) -> Result<zk::Client> {
        let connect_timeout = self.config.connect_timeout();
        match tokio::time::timeout(connect_timeout, opening).await {
            Ok(opened) => opened.map_err(|error| name_connect_timeout(error, connect_timeout)),
            Err(_) => Err(Error::connection(
                BACKEND,
                format!(
                    "no zookeeper session within {connect_timeout:?} (servers {}{}; \
                     `connect_timeout=` in the URL)",
                    self.config.connect_string(),
                    if self.config.tls() {
                        ", over TLS: a certificate either side refuses also ends here"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }

    /// Opens a client session of `timeout` as `opening` says, unbounded: a client error
    /// is an [`Error::Connection`] unless it says more (a refused login).
    ///
    /// A connection that the server leaves unanswered after the TLS handshake (ZooKeeper
    /// 3.8's Netty server does so now and then on a loaded machine: its log shows the
    /// client's certificate accepted, then no session) is one the client would wait on
    /// for the whole connect timeout, its per-connection timeout. So when half the connect timeout passes
    /// without a session, a second connection opens beside the first, and the first
    /// session either of them gets is kept (the other is dropped). A verdict that is
    /// not about the connection (a refused login) ends the opening at once; a
    /// connection error waits for the other connection's outcome.
    async fn open_client(&self, timeout: Duration, opening: Opening) -> Result<zk::Client> {
        let first = self.open_one_client(timeout, opening);
        tokio::pin!(first);
        let beside_after = self.config.connect_timeout() / 2;
        tokio::select! {
            opened = &mut first => return opened,
            () = tokio::time::sleep(beside_after) => {}
        }
        tracing::debug!(
            after = ?beside_after,
            "no zookeeper session yet; opening a second connection beside the first"
        );
        let second = self.open_one_client(timeout, opening);
        tokio::pin!(second);
        let (opened, other) = tokio::select! {
            opened = &mut first => (opened, futures::future::Either::Left(second)),
            opened = &mut second => (opened, futures::future::Either::Right(first)),
        };
        match opened {
            Err(error) if error.is_transient() => other.await,
            opened => opened,
        }
    }

    /// One try of [`Shared::open_client`]: one client, on connections of its own.
    async fn open_one_client(&self, timeout: Duration, opening: Opening) -> Result<zk::Client> {
        let connector = zk::Client::connector()
            .with_session_timeout(timeout)
            .with_connection_timeout(self.config.connect_timeout());
        let connector = match opening {
            Opening::Patient => connector,
            Opening::Detached => connector.with_detached(),
            Opening::OnePass => connector.with_fail_eagerly(),
        };
        let connector = match self.config.digest() {
            Some(digest) => connector.with_auth("digest", &digest),
            None => connector,
        };
        #[cfg(feature = "sasl")]
        let connector = match self.config.sasl_login() {
            Some((user, password)) => connector.with_sasl(zk::SaslOptions::digest_md5(
                user.to_owned(),
                password.to_owned(),
            )),
            None => connector,
        };
        let servers = self.config.connect_string();
        #[cfg(feature = "tls")]
        let connected = crate::tls::connect(connector, &self.config, &servers).await?;
        #[cfg(not(feature = "tls"))]
        let connected = connector.connect(&servers).await;
        connected.map_err(|error| match map(error) {
            Error::Backend { source, .. } => Error::connection(BACKEND, source),
            other => other,
        })
    }

    /// A store for `config`, with no session yet.
    pub(crate) fn new(config: ZkConfig) -> Self {
        Self {
            amnesia: Amnesia::new(config.root(), config.max_session_ttl()),
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The session `id` of this process, if it opened one.
    pub(crate) fn session(&self, id: u64) -> Option<Weak<dyn OpenSession>> {
        self.sessions().get(&id).cloned()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<dyn OpenSession>>> {
        locked(&self.sessions)
    }

    pub(crate) fn register_session(&self, id: u64, lease: Weak<dyn OpenSession>) {
        let mut sessions = self.sessions();
        sessions.retain(|_, lease| lease.strong_count() > 0);
        sessions.insert(id, lease);
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        self.sessions().remove(&id);
    }

    /// Closes every session of this process (the store forgot them, see
    /// `src/amnesia.rs`): each one's `lost()` fires.
    pub(crate) async fn end_sessions(&self) {
        let open: Vec<_> = self.sessions().values().filter_map(Weak::upgrade).collect();
        for session in open {
            if let Err(error) = session.close().await {
                tracing::debug!(backend = BACKEND, %error, "closing a session the store forgot");
            }
        }
    }
}
