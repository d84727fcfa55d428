//! Sessions: a heartbeat row each, renewed in batches; no connection of their own.
//!
//! Opening a session inserts a row in `sessions` (a random 63-bit id, TTL,
//! `expires_at`) through the pool. Its keepalive (`distsync_core::Session::start`: every
//! TTL/3, with its own client-side deadline) renews `expires_at` (the server's clock +
//! TTL) through the backend's heartbeat ([`crate::connection::heartbeat`]), which renews every
//! session of the process that asked meanwhile in one statement. A session holds no
//! connection: its holds and waits are rows ([`crate::waiter_line`]), so no connection's
//! death can free anything it holds, and a connection error is a failed renewal like
//! any other (retried until the client-side deadline).
//!
//! The session is lost when a renewal finds its row gone or expired (revoked, ended by
//! the sweep after a stall), at once when another process ends it (`end_sessions`
//! announces it with `NOTIFY s:<id>`), or at its client-side deadline when renewals
//! keep failing.
//!
//! # Identity
//! Session ids are drawn at random (63 bits, from `gen_random_uuid()`), not from a
//! sequence: a sequence can hand out a value again after a crash of the server (its
//! increments are logged ahead and lost with unflushed WAL), and a holder must never
//! find "its" row renewed for somebody else. A renewal matches the row by id and only
//! while it has not expired, so a holder whose row vanished (revoked, reaped, lost with
//! the server's state) learns it at its next renewal. Rows and fencing counters are
//! written with `synchronous_commit = on` (see [`crate::connection`]), so a session id or a
//! token a client has seen survives an immediate shutdown of the server.
//!
//! # Ending
//! A session closed or dropped while healthy is ended cleanly: its row is deleted (with
//! its entries, leader rows and double-barrier entries), so the store releases all it
//! held at once and wakes the waiters that lets in. A session its owner declares lost
//! (its row is gone, its renewals failed until the deadline) keeps its row until it
//! expires, so what it held is not granted to anyone else while it may still believe
//! it holds (see [`crate::waiter_line`]). A close that races a renewal in flight counts as
//! such a loss: the safe side, its holds are handed over after the TTL rather than at
//! once.

use distsync_core::raw::SessionStoreSide as _;
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::error::{is_session_gone, map, BACKEND};
use crate::notify::{Subscription, Wake};
use crate::store::{Registered, Shared};

/// The [`Lease`] of a PostgreSQL session.
pub(crate) struct PgLease {
    pub(crate) inner: Arc<LeaseInner>,
}

pub(crate) struct LeaseInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: i64,
    pub(crate) ttl: std::time::Duration,
    lost: OnceLock<CancellationToken>,
    ended: OnceCell<()>,
    /// Set when this process found the session broken (its row is gone, its renewals
    /// failed): its end must keep the row until it expires.
    failed: AtomicBool,
    /// Whether the last renewal was acknowledged (cleared while one is in flight, or
    /// after one failed): a revoke while it is clear follows a loss, not a `close()`.
    renewed: AtomicBool,
}

/// The lease of `session`, which the backend of `shared` must have granted.
///
/// # Errors
/// [`Error::InvalidArgument`] for a session of another backend.
pub(crate) fn lease_of<'s>(
    session: &'s Session,
    shared: &Arc<Shared>,
) -> Result<&'s Arc<LeaseInner>> {
    let lease = session
        .lease_granted_here::<PgLease>(BACKEND, |lease| Arc::ptr_eq(&lease.inner.shared, shared))?;
    Ok(&lease.inner)
}

/// Opens a session with `ttl`.
pub(crate) async fn open(shared: &Arc<Shared>, options: &SessionOptions) -> Result<Session> {
    let ttl = options.ttl;
    let grant_sent = tokio::time::Instant::now();
    let ttl_ms = i64::try_from(ttl.as_millis())
        .map_err(|_| Error::InvalidArgument(format!("session ttl {ttl:?} is too long")))?;
    // A random id (63 bits): never handed out again, even after a crash of the server.
    let insert = shared.sql(
        "INSERT INTO {s}.sessions (id, ttl_ms, expires_at) \
         VALUES (('x' || translate(gen_random_uuid()::text, '-', ''))::bit(63)::bigint, \
                 $1, clock_timestamp() + $1 * interval '1 millisecond') \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    );
    let mut id = None;
    for _ in 0..3 {
        let mut taken = shared.holds.take().await.map_err(map)?;
        let inserted = sqlx::query_scalar::<_, i64>(&insert)
            .bind(ttl_ms)
            .fetch_optional(taken.conn())
            .await;
        id = taken.settle(inserted).map_err(map)?;
        if id.is_some() {
            break;
        }
    }
    let id = id.ok_or_else(|| Error::backend(BACKEND, "could not draw an unused session id"))?;
    // A session ended by another process (revoked, or found expired) is announced with
    // NOTIFY: its owner learns at once instead of at the next renewal.
    let ended_elsewhere = match shared.hub.subscribe(format!("s:{id}")).await {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::debug!(session = id, %error, "no notification of store-side ends; the keepalive notices them");
            None
        }
    };
    let inner = Arc::new(LeaseInner {
        shared: Arc::clone(shared),
        id,
        ttl,
        lost: OnceLock::new(),
        ended: OnceCell::new(),
        failed: AtomicBool::new(false),
        renewed: AtomicBool::new(true),
    });
    let session = distsync_core::raw::start_session(
        BACKEND,
        SessionId(id as u64),
        options,
        grant_sent,
        Arc::new(PgLease {
            inner: Arc::clone(&inner),
        }),
    );
    let lost = session.lost_token().clone();
    let _ = inner.lost.set(lost.clone());
    shared.register_session(id, Arc::<LeaseInner>::downgrade(&inner));
    let watched = Arc::downgrade(&inner);
    tokio::spawn(async move {
        tokio::select! {
            () = lost.cancelled() => {}
            () = ended(ended_elsewhere) => {
                if let Some(inner) = watched.upgrade() {
                    tracing::warn!(session = inner.id, "session ended from the store side");
                    inner.fail();
                }
            }
        }
        // A session found broken by this process keeps its row until it expires; it
        // only leaves this process's registry.
        if let Some(inner) = watched.upgrade() {
            if inner.failed.load(Ordering::SeqCst) {
                inner.shared.unregister_session(inner.id);
            } else if !inner.renewed.load(Ordering::SeqCst) {
                // Lost with its renewals failing: the store may come back as one that
                // forgot, which no renewal of this session will find.
                crate::epoch::check_soon(&inner.shared);
            }
        }
    });
    tracing::debug!(session = id, ?ttl, "postgres session opened");
    Ok(session)
}

/// Resolves when the store announces the end of the session.
async fn ended(subscription: Option<Subscription>) {
    if let Some(mut subscription) = subscription {
        loop {
            match subscription.changed().await {
                Ok(Wake::Notified) => return,
                // Missed notifications are the keepalive's to notice.
                Ok(Wake::Resync) => {}
                Err(_) => break,
            }
        }
    }
    std::future::pending::<()>().await;
}

impl LeaseInner {
    /// The session's lost token (fires when the session is known to be gone).
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.lost.get().cloned().unwrap_or_default()
    }

    /// Whether the session is known to be gone.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.get().is_some_and(CancellationToken::is_cancelled)
    }

    /// Declares the session lost (its row is gone, or it was ended from elsewhere).
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        if let Some(lost) = self.lost.get() {
            if !lost.is_cancelled() {
                tracing::warn!(session = self.id, "postgres session lost");
            }
            lost.cancel();
        }
    }

    /// Maps a statement error of one of the session's entries: an ended session
    /// (`DS001`, or a row referencing its deleted row) is the session lost.
    pub(crate) fn statement_error(&self, error: sqlx::Error) -> Error {
        if is_session_gone(&error) {
            tracing::debug!(session = self.id, %error, "the session has ended");
            self.fail();
            Error::SessionLost
        } else {
            map(error)
        }
    }

    /// Ends the session in the store, once. `clean` (a close or drop) asks for a clean
    /// end: the row is deleted and everything it held is released at once. Otherwise,
    /// or when the session was found broken or its last renewal was not acknowledged,
    /// its row is left to expire (see the module docs).
    pub(crate) async fn end(&self, clean: bool) -> Result<()> {
        self.ended
            .get_or_try_init(|| async {
                let clean = clean
                    && !self.failed.load(Ordering::SeqCst)
                    && self.renewed.load(Ordering::SeqCst);
                if let Some(lost) = self.lost.get() {
                    lost.cancel();
                }
                if clean {
                    self.shared.end_sessions(&[self.id]).await?;
                }
                self.shared.unregister_session(self.id);
                tracing::debug!(session = self.id, clean, "postgres session ended");
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
    }
}

impl Registered for LeaseInner {
    fn fail(&self) {
        LeaseInner::fail(self);
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let inner = &self.inner;
        inner.renewed.store(false, Ordering::SeqCst);
        if !inner.shared.heartbeat.renew(inner.id).await? {
            tracing::warn!(session = inner.id, "session row expired or removed");
            // Whether the store forgot it (and every other session of this client)
            // is checked apart: this session is lost either way.
            crate::epoch::check_soon(&inner.shared);
            inner.fail();
            return Ok(KeepAlive::Gone);
        }
        inner.renewed.store(true, Ordering::SeqCst);
        inner.shared.sweep_if_due();
        Ok(KeepAlive::Renewed)
    }

    async fn revoke(&self) -> Result<()> {
        self.inner.end(true).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
