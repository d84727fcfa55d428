//! A client for the requests that belong to no distsync session (STM transactions,
//! counters, latches, a queue's receipts): connected on first use, kept while it
//! lives, and replaced once its ZooKeeper session has ended.
//!
//! A request in flight when the session ends fails with the store's session-expired
//! error ([`Error::SessionLost`]), and a write is not repeated, since it may have been
//! applied. The STM, counters and latches write nothing ephemeral, so the end of this
//! client's session is no failure of theirs, only of the connection it rode on: a
//! counter's or a latch's read goes again through the next session ([`Direct::read`]),
//! and so does its wait ([`reads_again`]). A queue's receipts say themselves what their
//! session's end means.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Error, Result};
use zookeeper_client as zk;

use crate::error::{found, map};
use crate::store::Shared;
use crate::BACKEND;

/// The pause before a request, or a wait's read, is sent again after a connection
/// loss, a transient error or a session's end: the client is reconnecting meanwhile,
/// and the session's deadline (or the wait's own end) bounds the whole wait.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A lazily connected client of one backend.
pub(crate) struct Direct {
    pub(crate) shared: Arc<Shared>,
    session_timeout: Duration,
    client: tokio::sync::Mutex<Option<zk::Client>>,
}

impl Direct {
    /// A client for `shared`'s servers, not connected yet, whose sessions have the
    /// shortest timeout the servers grant by default.
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self::with_session_timeout(shared, crate::MIN_SESSION_TTL * 4)
    }

    /// A client for `shared`'s servers, not connected yet, whose sessions have
    /// `session_timeout` (for a caller that keeps ephemeral nodes on it).
    pub(crate) fn with_session_timeout(shared: &Arc<Shared>, session_timeout: Duration) -> Self {
        Self {
            shared: Arc::clone(shared),
            session_timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The client, connecting (again) if it has none or its session has ended, once it
    /// is connected (see [`connected`]).
    ///
    /// # Errors
    /// The connect's error; [`Error::Connection`] when the client's connection is down
    /// and does not come back within the request timeout.
    pub(crate) async fn client(&self) -> Result<zk::Client> {
        let client = self.live().await?;
        connected(&self.shared, &client).await?;
        if client.state().is_terminated() {
            // The session ended while the connection was down: the next one serves.
            return self.live().await;
        }
        Ok(client)
    }

    /// The client, connecting (again) if it has none or its session has ended.
    async fn live(&self) -> Result<zk::Client> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
        }
        let client = self.shared.connect(self.session_timeout).await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `read`, requests that only read, with the client; when the client's session
    /// ends under it ([`Error::SessionLost`]), runs it once more through a new session. A
    /// read repeated changes nothing, and nothing it reads belongs to the session.
    ///
    /// # Errors
    /// `read`'s error; [`Error::SessionLost`] when the new session ends under it too.
    pub(crate) async fn read<T, F, Fut>(&self, mut read: F) -> Result<T>
    where
        F: FnMut(zk::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match read(self.client().await?).await {
            Err(Error::SessionLost) => {
                tracing::debug!("zookeeper session ended under a read; reading again");
                read(self.client().await?).await
            }
            other => other,
        }
    }
}

/// Whether a wait on a [`Direct`] client reads again after `error` rather than return
/// it: the store unavailable or slow (transient errors and timeouts), or the client's
/// session ended ([`Error::SessionLost`]), after which [`Direct::client`] opens a new
/// one. A wait only reads, so a session's end is no failure of the wait.
pub(crate) fn reads_again(error: &Error) -> bool {
    error.is_transient() || error.is_timeout() || matches!(error, Error::SessionLost)
}

/// Waits, within the configured request timeout, until `client` is connected (or its
/// session has ended, which its next request reports).
///
/// The client queues a request made while its connection is down and sends it once it
/// reconnects, whether or not its caller still waits for the answer. A request made
/// only once the client is connected is sent at once or fails with the connection, so
/// a request its caller gave up on during an outage does not reach the server after
/// it, but for one made in the instant the connection drops, before the client has
/// noticed: the client holds that one too and sends it when it reconnects (its caller
/// gets a connection error, which says it may have been applied).
///
/// # Errors
/// [`Error::Connection`] when the connection is not back within the timeout.
pub(crate) async fn connected(shared: &Shared, client: &zk::Client) -> Result<()> {
    let usable = |state: zk::SessionState| !matches!(state, zk::SessionState::Disconnected);
    if usable(client.state()) {
        return Ok(());
    }
    let mut states = client.state_watcher();
    let timeout = shared.config.request_timeout();
    let back = tokio::time::timeout(timeout, async {
        let mut state = states.state();
        while !usable(state) {
            state = states.changed().await;
        }
    })
    .await;
    back.map_err(|_| {
        Error::connection(
            BACKEND,
            format!("zookeeper connection not back within {timeout:?}; the request is not queued"),
        )
    })
}

/// Runs one request within the configured request timeout.
///
/// # Errors
/// [`Error::Connection`] when it gets no answer in time (it may have been applied, as
/// that error says), or the request's own error, unmapped, for the caller to tell
/// conflicts apart.
pub(crate) async fn bounded<T, E>(
    shared: &Shared,
    request: impl Future<Output = std::result::Result<T, E>>,
) -> Result<std::result::Result<T, E>> {
    let timeout = shared.config.request_timeout();
    tokio::time::timeout(timeout, request).await.map_err(|_| {
        Error::connection(
            BACKEND,
            format!("zookeeper request not answered within {timeout:?}"),
        )
    })
}

/// `request` within the configured request timeout, no answer in time being
/// [`Error::Timeout`]; the request's own error unmapped.
///
/// # Errors
/// [`Error::Timeout`] when it gets no answer in time.
pub(crate) async fn timed<T>(
    shared: &Shared,
    request: impl Future<Output = std::result::Result<T, zk::Error>>,
) -> Result<std::result::Result<T, zk::Error>> {
    let timeout = shared.config.request_timeout();
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| Error::Timeout(timeout))
}

/// `request` within the configured request timeout, no answer in time counting as a
/// lost connection ([`zk::Error::ConnectionLoss`]), for callers that read the store's
/// own errors.
pub(crate) async fn answered<T>(
    shared: &Shared,
    request: impl Future<Output = std::result::Result<T, zk::Error>>,
) -> std::result::Result<T, zk::Error> {
    let timeout = shared.config.request_timeout();
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or(Err(zk::Error::ConnectionLoss))
}

/// [`bounded`], with every store error mapped.
///
/// # Errors
/// As [`bounded`], and the store's error mapped by [`map`].
pub(crate) async fn request<T>(
    shared: &Shared,
    request: impl Future<Output = std::result::Result<T, zk::Error>>,
) -> Result<T> {
    bounded(shared, request).await?.map_err(map)
}

/// [`request`], a missing node ([`zk::Error::NoNode`]) being `None`.
///
/// # Errors
/// As [`request`].
pub(crate) async fn request_found<T>(
    shared: &Shared,
    request: impl Future<Output = std::result::Result<T, zk::Error>>,
) -> Result<Option<T>> {
    found(bounded(shared, request).await?).map_err(map)
}

/// The options of every persistent node these requests create: open to anyone, as
/// the recipes' nodes are.
pub(crate) fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Creates the parent of `path` and its ancestors where missing, each with no data.
///
/// # Errors
/// The store's error.
pub(crate) async fn parents(shared: &Shared, client: &zk::Client, path: &str) -> Result<()> {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return Ok(());
    };
    if parent.is_empty() {
        return Ok(());
    }
    request(shared, client.mkdir(parent, &persistent())).await
}
