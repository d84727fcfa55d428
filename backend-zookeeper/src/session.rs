//! Sessions: one ZooKeeper session per distsync session.
//!
//! A ZooKeeper session is the lease. Each distsync session opens a client of its own
//! whose session timeout is the session's TTL; every node held through the session
//! (a lock contender) is ephemeral, so the server deletes it when the session expires
//! or closes. What the server must grant, and why a session it would cut short is
//! refused ([`Error::InvalidArgument`]), is in docs/ZOOKEEPER.md, "Sessions".
//!
//! # Renewals and the client-side deadline
//!
//! The client pings on its own every third of the timeout and reconnects to another
//! server after a connection loss (Curator's SUSPENDED). distsync's renewal
//! ([`Lease::keep_alive`]) is one more request, `exists /` on the session's connection:
//! its answer proves the server heard the session after the renewal was sent, so the
//! server cannot expire it before the send time plus the timeout, and the session's
//! client-side deadline (send time + TTL − margin, see [`distsync_core::session`])
//! passes first. A renewal answered `SessionExpired` is [`KeepAlive::Gone`]; so is a
//! client whose state has become `Expired`, `Closed` or `AuthFailed` (Curator's LOST),
//! which a watch on the client's state also reports at once, firing `lost()` without
//! waiting for the next renewal.
//!
//! # Revoking
//!
//! The session's client is its only handle on the session: every request takes a
//! clone for its own duration and none is kept across a wait. [`Lease::revoke`] (a
//! close) takes the client away and drops it, and the client sends `closeSession` as
//! it goes, which deletes the session's ephemeral nodes at once; so does
//! [`Backend::revoke_session`](distsync_core::Backend::revoke_session) for a session
//! of this process. ZooKeeper offers no way to end another process's session short of
//! attaching to it with its password, which only its owner has.
//!
//! # A store that forgot
//!
//! Every session of a backend reads the store's epoch marker as it opens, and a session that
//! loses its connection, or is lost without a close, makes the backend read it again
//! (see `src/amnesia.rs`).

use std::any::Any;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use async_trait::async_trait;
use distsync_core::raw::SessionStoreSide as _;
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::error::{found, is_session_end, map};
use crate::store::{OpenSession, Shared};
use crate::BACKEND;

/// The lease of `session`, checked to be one of `shared`'s sessions.
///
/// # Errors
/// [`Error::InvalidArgument`] for a session of another backend or another store.
pub(crate) fn lease_of<'s>(
    session: &'s Session,
    shared: &Arc<Shared>,
) -> Result<&'s Arc<LeaseInner>> {
    let lease = session
        .lease_granted_here::<ZkLease>(BACKEND, |lease| Arc::ptr_eq(&lease.inner.shared, shared))?;
    Ok(&lease.inner)
}

/// The ZooKeeper side of a [`Session`].
pub(crate) struct ZkLease {
    pub(crate) inner: Arc<LeaseInner>,
}

/// What the lease and everything held through it share.
pub(crate) struct LeaseInner {
    pub(crate) shared: Arc<Shared>,
    /// The session's client: every node held through the session is created by it.
    /// `None` once closed.
    client: RwLock<Option<zk::Client>>,
    pub(crate) id: u64,
    /// The session's lost token, set once the session has started.
    lost: OnceLock<CancellationToken>,
}

impl LeaseInner {
    /// Declares the session lost.
    pub(crate) fn fail(&self) {
        if let Some(lost) = self.lost.get() {
            if !lost.is_cancelled() {
                tracing::warn!(session = %SessionId(self.id), "zookeeper session lost");
            }
            lost.cancel();
        }
    }

    /// Maps an error of a request sent through the session, noting an ended session.
    pub(crate) fn error(&self, error: zk::Error) -> Error {
        if is_session_end(&error) {
            self.fail();
        }
        map(error)
    }

    /// The session's client, for one request (never kept across a wait, so that
    /// [`LeaseInner::close`] ends the session).
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is closed.
    pub(crate) fn client(&self) -> Result<zk::Client> {
        self.slot().clone().ok_or(Error::SessionLost)
    }

    /// The session's client, `None` once closed, read under its lock.
    fn slot(&self) -> RwLockReadGuard<'_, Option<zk::Client>> {
        self.client.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `request` until it gets an answer other than a connection loss, pausing
    /// `pause` between attempts while the client reconnects, and sending each attempt
    /// only once the client is connected (see [`crate::direct::connected`]), so that
    /// attempts do not pile up in the client's queue during an outage.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        pause: std::time::Duration,
        mut request: F,
    ) -> Result<std::result::Result<T, zk::Error>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        loop {
            match self.once(&mut request).await? {
                Err(error) if crate::error::is_connection_loss(&error) => {
                    tracing::debug!(session = %SessionId(self.id), %error, "zookeeper request not answered; retrying");
                    tokio::select! {
                        () = self.lost_or_pending() => return Err(Error::SessionLost),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                answer => return Ok(answer),
            }
        }
    }

    /// One attempt of [`retrying`](Self::retrying): `request` (whose call sends it: the
    /// client sends a request when it is made, not when it is awaited) made once the
    /// client is connected, and answered within the request timeout; no answer in time
    /// counts as a lost connection.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over.
    pub(crate) async fn once<T, Fut>(
        &self,
        request: impl FnOnce() -> Fut,
    ) -> Result<std::result::Result<T, zk::Error>>
    where
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        if self.is_over() {
            return Err(Error::SessionLost);
        }
        let client = self.client()?;
        let answer = match crate::direct::connected(&self.shared, &client).await {
            Ok(()) => crate::direct::answered(&self.shared, request()).await,
            Err(_) => Err(zk::Error::ConnectionLoss),
        };
        Ok(answer)
    }

    /// Deletes the node at `path`, which this session created, in one attempt (see
    /// [`once`](Self::once)): the request of the clean-up of an abandoned node. A node
    /// already gone counts as deleted.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over (the node went with it); the
    /// store's error, transient after a lost connection.
    pub(crate) async fn delete_once(&self, path: &str) -> Result<()> {
        let client = self.client()?;
        let deleted = self.once(|| client.delete(path, None)).await?;
        found(deleted).map_err(|error| self.error(error))?;
        Ok(())
    }

    /// The session's lost token, which the store's end of the session also fires (a
    /// token nobody fires before the session has started).
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.lost.get().cloned().unwrap_or_default()
    }

    /// Resolves once the session is declared lost (never before it has started).
    async fn lost_or_pending(&self) {
        match self.lost.get() {
            Some(lost) => lost.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the session is known to be over (closed, expired, or lost).
    pub(crate) fn is_over(&self) -> bool {
        self.lost.get().is_some_and(CancellationToken::is_cancelled)
            || (self.slot().as_ref()).is_none_or(|client| client.state().is_terminated())
    }

    /// Ends the session in the store: drops the session's client, which sends
    /// `closeSession` once the requests still in flight (bounded by the request
    /// timeout) have let go of their clones; the server then deletes its ephemeral
    /// nodes. A session already gone is fine.
    pub(crate) async fn close(&self) -> Result<()> {
        let client = self
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.fail();
        drop(client);
        Ok(())
    }
}

/// Opens a session of `options.ttl` on a client of its own.
pub(crate) async fn open(shared: &Arc<Shared>, options: &SessionOptions) -> Result<Session> {
    let grant_sent = tokio::time::Instant::now();
    let client = shared.connect(options.ttl).await?;
    let granted = client.session_timeout();
    if granted < options.ttl {
        return Err(Error::InvalidArgument(format!(
            "the zookeeper server grants sessions of at most {granted:?}, below the ttl \
             {:?} asked for: raise the server's maxSessionTimeout or ask for less",
            options.ttl
        )));
    }
    // The epoch marker, on every session (see `src/amnesia.rs`); the session's
    // validity counts from before it, so the read only shortens it.
    crate::epoch::on_session(shared, &client, options.ttl).await?;
    let id = client.session_id().0 as u64;
    let mut states = client.state_watcher();
    let inner = Arc::new(LeaseInner {
        shared: Arc::clone(shared),
        client: RwLock::new(Some(client)),
        id,
        lost: OnceLock::new(),
    });
    let session = distsync_core::raw::start_session(
        BACKEND,
        SessionId(id),
        options,
        grant_sent,
        Arc::new(ZkLease {
            inner: Arc::clone(&inner),
        }),
    );
    let lost = session.lost_token().clone();
    let _ = inner.lost.set(lost.clone());
    let registered: std::sync::Weak<dyn OpenSession> = Arc::downgrade(&inner) as _;
    shared.register_session(id, registered);
    let watched = Arc::downgrade(&inner);
    // The client's state, as Curator's ConnectionStateListener sees it: Disconnected
    // is SUSPENDED (the session may live on; the deadline decides), a terminal state
    // is LOST.
    tokio::spawn(async move {
        loop {
            let state = tokio::select! {
                () = lost.cancelled() => break,
                state = states.changed() => state,
            };
            match state {
                zk::SessionState::Disconnected => {
                    tracing::debug!(session = %SessionId(id), "zookeeper connection lost (suspended)");
                    // Perhaps a server that forgot: a client that saw a zxid above the
                    // new store's cannot reconnect to tell, a connection of its own can
                    // (see `src/amnesia.rs`).
                    if let Some(inner) = watched.upgrade() {
                        let shared = Arc::clone(&inner.shared);
                        drop(inner);
                        tokio::spawn(async move { crate::epoch::recheck(&shared).await });
                    }
                }
                state if state.is_terminated() => {
                    tracing::debug!(session = %SessionId(id), %state, "zookeeper session ended");
                    if let Some(inner) = watched.upgrade() {
                        inner.fail();
                    }
                    break;
                }
                state => {
                    tracing::debug!(session = %SessionId(id), %state, "zookeeper connection state");
                }
            }
        }
        if let Some(inner) = watched.upgrade() {
            inner.shared.unregister_session(inner.id);
            // Lost without a close: perhaps a store that forgot (see `src/amnesia.rs`).
            let unclosed = inner.slot().is_some();
            let shared = Arc::clone(&inner.shared);
            drop(inner);
            if unclosed {
                crate::epoch::recheck(&shared).await;
            }
        }
    });
    tracing::debug!(session = %SessionId(id), ttl = ?options.ttl, "zookeeper session opened");
    Ok(session)
}

#[async_trait]
impl OpenSession for LeaseInner {
    async fn close(&self) -> Result<()> {
        LeaseInner::close(self).await
    }
}

#[async_trait]
impl Lease for ZkLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let inner = &self.inner;
        let Ok(client) = inner.client() else {
            return Ok(KeepAlive::Gone);
        };
        if client.state().is_terminated() {
            return Ok(KeepAlive::Gone);
        }
        match crate::direct::timed(&inner.shared, client.check_stat("/")).await? {
            Ok(_) => Ok(KeepAlive::Renewed),
            Err(error) if is_session_end(&error) => Ok(KeepAlive::Gone),
            Err(error) => Err(map(error)),
        }
    }

    async fn revoke(&self) -> Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
