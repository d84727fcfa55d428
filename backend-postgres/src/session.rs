//! Sessions: a heartbeat row, a dedicated control connection, and one dedicated
//! connection per hold.
//!
//! Opening a session inserts a row in `sessions` (id, TTL, `expires_at`) and opens a
//! control connection outside the pool whose `application_name` is
//! `distsync/<schema oid>/<session id>`; the keepalive renews `expires_at` through it every
//! TTL/3 and pings the session's hold connections. The session is lost when the control
//! connection or a hold connection dies, or when the row is gone or expired (revoked, or
//! ended by a waiter that found it stalled); a session ended by another process is
//! announced with `NOTIFY s:<id>`, so its owner learns at once rather than at the next
//! renewal. Whenever it ends, for whatever reason, its row is deleted and every backend
//! carrying its tag is terminated, so the store releases all it held.
//!
//! Locks, read locks and candidacies are session-level advisory locks, and a session may
//! hold many at once and wait for several concurrently. A blocking `pg_advisory_lock`
//! occupies its connection until granted, so each hold gets a connection of its own
//! (see [`crate::hold`]), tagged like the control connection and reused after release.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId};
use sqlx::postgres::PgConnection;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::error::{is_connection_loss, map, BACKEND};
use crate::hold::Hold;
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
    control: tokio::sync::Mutex<Option<PgConnection>>,
    idle: Mutex<Vec<(PgConnection, i32)>>,
    active: Mutex<Vec<Weak<Hold>>>,
    lost: OnceLock<CancellationToken>,
    ended: OnceCell<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens a session with `ttl`.
pub(crate) async fn open(shared: &Arc<Shared>, ttl: Duration) -> Result<Session> {
    let ttl_ms = i64::try_from(ttl.as_millis())
        .map_err(|_| Error::InvalidArgument(format!("session ttl {ttl:?} is too long")))?;
    let id: i64 = sqlx::query_scalar(&shared.sql(
        "INSERT INTO {s}.sessions (ttl_ms, expires_at) \
         VALUES ($1, clock_timestamp() + $1 * interval '1 millisecond') RETURNING id",
    ))
    .bind(ttl_ms)
    .fetch_one(&shared.pool)
    .await
    .map_err(map)?;
    let control = async {
        let (mut conn, pid) = shared.connect_dedicated(id).await?;
        sqlx::query(&shared.sql("UPDATE {s}.sessions SET pid = $2 WHERE id = $1"))
            .bind(id)
            .bind(pid)
            .execute(&mut conn)
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
        control: tokio::sync::Mutex::new(Some(control)),
        idle: Mutex::new(Vec::new()),
        active: Mutex::new(Vec::new()),
        lost: OnceLock::new(),
        ended: OnceCell::new(),
    });
    let session = Session::start(
        BACKEND,
        SessionId(id as u64),
        ttl,
        Arc::new(PgLease {
            inner: Arc::clone(&inner),
        }),
    );
    let lost = session.lost_token().clone();
    let _ = inner.lost.set(lost.clone());
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
    // However the session ends (closed, dropped, lost), end it in the store too.
    tokio::spawn(async move {
        tokio::select! {
            () = lost.cancelled() => {}
            () = ended(ended_elsewhere) => {
                tracing::warn!(session = inner.id, "session ended from the store side");
                inner.fail();
            }
        }
        if let Err(error) = inner.end().await {
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
        if let Some(lost) = self.lost.get() {
            if !lost.is_cancelled() {
                tracing::warn!(session = self.id, "postgres session lost");
            }
            lost.cancel();
        }
    }

    /// A dedicated connection for a new hold: an idle one of this session, or a new one.
    pub(crate) async fn connection(&self) -> Result<(PgConnection, i32)> {
        if self.is_lost() {
            return Err(Error::SessionLost);
        }
        if let Some(idle) = lock(&self.idle).pop() {
            return Ok(idle);
        }
        self.shared.connect_dedicated(self.id).await
    }

    /// Takes back the connection of a released hold, for reuse.
    pub(crate) fn give_back(&self, conn: PgConnection, pid: i32) {
        if self.is_lost() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push((conn, pid));
        }
    }

    /// Tracks a granted hold, so the keepalive checks its connection.
    pub(crate) fn track(&self, hold: &Arc<Hold>) {
        let mut active = lock(&self.active);
        active.retain(|hold| hold.strong_count() > 0);
        active.push(Arc::downgrade(hold));
    }

    /// Ends the session in the store, once: deletes its row and terminates its backends.
    pub(crate) async fn end(&self) -> Result<()> {
        self.ended
            .get_or_try_init(|| async {
                self.fail();
                lock(&self.idle).clear();
                self.shared.end_sessions(&[self.id]).await?;
                self.shared.unregister_session(self.id);
                if let Ok(mut control) = self.control.try_lock() {
                    *control = None;
                }
                tracing::debug!(session = self.id, "postgres session ended");
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
    }

    async fn renew(&self) -> Result<KeepAlive> {
        let mut control = self.control.lock().await;
        let Some(conn) = control.as_mut() else {
            return Ok(KeepAlive::Gone);
        };
        let renewed: std::result::Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar(&self.shared.sql(
                "UPDATE {s}.sessions \
                 SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond' \
                 WHERE id = $1 AND expires_at > clock_timestamp() RETURNING id",
            ))
            .bind(self.id)
            .fetch_optional(&mut *conn)
            .await;
        match renewed {
            Ok(Some(_)) => Ok(KeepAlive::Renewed),
            Ok(None) => {
                tracing::warn!(session = self.id, "session row expired or removed");
                Ok(KeepAlive::Gone)
            }
            Err(error) if is_connection_loss(&error) => {
                tracing::warn!(session = self.id, %error, "session control connection lost");
                *control = None;
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
        if inner.renew().await? == KeepAlive::Gone {
            inner.fail();
            return Ok(KeepAlive::Gone);
        }
        inner.shared.sweep_if_due();
        let holds: Vec<Arc<Hold>> = lock(&inner.active)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for hold in holds {
            if !hold.ping().await {
                tracing::warn!(session = inner.id, "a hold connection of the session died");
                inner.fail();
                return Ok(KeepAlive::Gone);
            }
        }
        Ok(KeepAlive::Renewed)
    }

    async fn revoke(&self) -> Result<()> {
        self.inner.end().await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
