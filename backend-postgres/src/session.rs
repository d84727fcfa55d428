//! Sessions: a heartbeat row, a dedicated control connection, and one dedicated
//! connection per hold.
//!
//! Opening a session inserts a row in `sessions` (a random 63-bit id, TTL,
//! `expires_at`) and opens a control connection outside the pool whose
//! `application_name` is `distsync/<schema oid>/<session id>`; the keepalive renews
//! `expires_at` (the server's clock + TTL) through it every TTL/3. The session is lost
//! when the control connection or a hold connection closes (noticed at once, see
//! [`crate::conn`]), or when the row is gone or expired (revoked, or ended by a waiter
//! that found it stalled); a session ended by another process is announced with
//! `NOTIFY s:<id>`, so its owner learns at once rather than at the next renewal.
//!
//! # Identity
//! Session ids are drawn at random (63 bits, from `gen_random_uuid()`), not from a
//! sequence: a sequence can hand out a value again after a crash of the server (its
//! increments are logged ahead and lost with unflushed WAL), and a holder must never
//! find "its" row renewed for somebody else. A renewal matches the row by id and only
//! while it has not expired, so a holder whose row vanished (revoked, reaped, lost with
//! the server's state) learns it at its next renewal. Rows, grants and fencing counters
//! are written with `synchronous_commit = on` (see [`crate::conn`]), so a session id or a
//! token a client has seen survives an immediate shutdown of the server.
//!
//! # Ending
//! A session closed or dropped while healthy is ended cleanly: its row is deleted (with
//! its grant rows, leader rows and double-barrier entries) and every backend carrying
//! its tag is terminated, so the store releases all it held at once. A session its owner
//! declares lost (a connection died, renewals failed or were refused) only has its
//! backends terminated: its row stays until it expires, so what it held is not granted
//! to anyone else while it may still believe it holds (see [`crate::hold`]). A close
//! that races a renewal in flight counts as such a loss: the safe side, its holds are
//! handed over after the TTL rather than at once.
//!
//! Locks, read locks and candidacies are session-level advisory locks, and a session may
//! hold many at once and wait for several concurrently. A blocking `pg_advisory_lock`
//! occupies its connection until granted, so each hold gets a connection of its own
//! (see [`crate::hold`]), tagged like the control connection and reused after release.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
use futures::FutureExt;
use sqlx::postgres::PgListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::error::{is_connection_loss, map, BACKEND};
use crate::notify::{Subscription, Wake};
use crate::shared::Shared;

/// Idle hold connections kept per session for reuse.
const MAX_IDLE: usize = 4;

/// The [`Lease`] of a PostgreSQL session.
pub(crate) struct PgLease {
    pub(crate) inner: Arc<LeaseInner>,
}

pub(crate) struct LeaseInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: i64,
    pub(crate) ttl: Duration,
    control: Conn,
    idle: Mutex<Vec<Arc<Conn>>>,
    lost: OnceLock<CancellationToken>,
    ended: OnceCell<()>,
    /// Set when this process found the session broken (a connection died, the row is
    /// gone): its end must keep the row until it expires.
    failed: AtomicBool,
    /// Whether the last renewal was acknowledged (cleared while one is in flight, or
    /// after one failed): a revoke while it is clear follows a loss, not a `close()`.
    renewed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        id = sqlx::query_scalar::<_, i64>(&insert)
            .bind(ttl_ms)
            .fetch_optional(&shared.pool)
            .await
            .map_err(map)?;
        if id.is_some() {
            break;
        }
    }
    let id = id.ok_or_else(|| Error::backend(BACKEND, "could not draw an unused session id"))?;
    let control = async {
        let conn = shared.connect_dedicated(id).await?;
        let sql = shared.sql("UPDATE {s}.sessions SET pid = $2 WHERE id = $1");
        let pid = conn.pid();
        conn.run(move |c: &mut PgListener| {
            async move { sqlx::query(&sql).bind(id).bind(pid).execute(&mut *c).await }.boxed()
        })
        .await
        .map_err(map)?;
        Ok::<_, Error>(conn)
    }
    .await;
    let control = match control {
        Ok(conn) => conn,
        Err(error) => {
            if let Err(cleanup) = shared.end_sessions(&[id]).await {
                tracing::debug!(session = id, %cleanup, "removing a half-opened session failed; it expires");
            }
            return Err(error);
        }
    };
    let inner = Arc::new(LeaseInner {
        shared: Arc::clone(shared),
        id,
        ttl,
        control,
        idle: Mutex::new(Vec::new()),
        lost: OnceLock::new(),
        ended: OnceCell::new(),
        failed: AtomicBool::new(false),
        renewed: AtomicBool::new(true),
    });
    let session = Session::start(
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
    // The control connection's death loses the session at once.
    inner.control.watch_for(Some(Arc::downgrade(&inner)));
    if inner.control.is_dead() {
        inner.fail();
    }
    shared.register_session(id, Arc::downgrade(&inner));
    // A session ended by another process (revoked, or found expired) is announced with
    // NOTIFY: its owner learns at once instead of at the next renewal.
    let ended_elsewhere = match shared.hub.subscribe(format!("s:{id}")).await {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::debug!(session = id, %error, "no notification of store-side ends; the keepalive notices them");
            None
        }
    };
    // A session found broken by this process is ended here, keeping its row (a close,
    // a drop, or a loss by the deadline reach the store through `Lease::revoke`).
    tokio::spawn(async move {
        tokio::select! {
            () = lost.cancelled() => {}
            () = ended(ended_elsewhere) => {
                tracing::warn!(session = inner.id, "session ended from the store side");
                inner.fail();
            }
        }
        if !inner.failed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = inner.end(false).await {
            tracing::warn!(session = inner.id, %error, "ending a lost session failed; its row expires and waiters end it");
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

    /// Declares the session lost (a connection of it died, or its row is gone).
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        if let Some(lost) = self.lost.get() {
            if !lost.is_cancelled() {
                tracing::warn!(session = self.id, "postgres session lost");
            }
            lost.cancel();
        }
    }

    /// A dedicated connection for a new hold: an idle one of this session, or a new one.
    pub(crate) async fn connection(&self) -> Result<Arc<Conn>> {
        if self.is_lost() {
            return Err(Error::SessionLost);
        }
        loop {
            let Some(idle) = lock(&self.idle).pop() else {
                break;
            };
            if !idle.is_dead() {
                return Ok(idle);
            }
        }
        Ok(Arc::new(self.shared.connect_dedicated(self.id).await?))
    }

    /// Takes back the connection of a released hold, for reuse.
    pub(crate) fn give_back(&self, conn: Arc<Conn>) {
        if self.is_lost() || conn.is_dead() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Ends the session in the store, once. `clean` (a close or drop) asks for a clean
    /// end: the row is deleted and everything it held is released at once. Otherwise,
    /// or when the session was found broken or its last renewal was not acknowledged,
    /// only its backends are terminated and its row is left to expire (see the module
    /// docs).
    pub(crate) async fn end(&self, clean: bool) -> Result<()> {
        self.ended
            .get_or_try_init(|| async {
                let clean = clean
                    && !self.failed.load(Ordering::SeqCst)
                    && self.renewed.load(Ordering::SeqCst);
                if let Some(lost) = self.lost.get() {
                    lost.cancel();
                }
                lock(&self.idle).clear();
                if clean {
                    self.shared.end_sessions(&[self.id]).await?;
                } else {
                    self.shared.terminate_session(self.id).await?;
                }
                self.shared.unregister_session(self.id);
                tracing::debug!(session = self.id, clean, "postgres session ended");
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
    }

    async fn renew(&self) -> Result<KeepAlive> {
        if self.control.is_dead() {
            return Ok(KeepAlive::Gone);
        }
        let sql = self.shared.sql(
            "UPDATE {s}.sessions \
             SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond' \
             WHERE id = $1 AND expires_at > clock_timestamp() RETURNING id",
        );
        let id = self.id;
        let renewed = self
            .control
            .run(move |c: &mut PgListener| {
                async move {
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(id)
                        .fetch_optional(&mut *c)
                        .await
                }
                .boxed()
            })
            .await;
        match renewed {
            Ok(Some(_)) => Ok(KeepAlive::Renewed),
            Ok(None) => {
                tracing::warn!(session = self.id, "session row expired or removed");
                Ok(KeepAlive::Gone)
            }
            Err(error) if is_connection_loss(&error) => {
                tracing::warn!(session = self.id, %error, "session control connection lost");
                Ok(KeepAlive::Gone)
            }
            Err(error) => Err(map(error)),
        }
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let inner = &self.inner;
        inner.renewed.store(false, Ordering::SeqCst);
        if inner.renew().await? == KeepAlive::Gone {
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
