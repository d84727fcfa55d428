//! Holds: session-level advisory locks, each on a dedicated connection of its session.
//!
//! # Waiting
//! A grant first tries (`pg_try_advisory_lock`, one round trip when the lock is free).
//! Otherwise the waiter blocks in `pg_advisory_lock` on its own connection, so
//! PostgreSQL's lock queue orders the waiters (FIFO; a waiting exclusive request blocks
//! shared requests that arrive after it) and hands the lock over the moment it is
//! released, without polling. The fencing counter is bumped by the same statement, right
//! after the grant.
//!
//! # TTL enforcement
//! A paused holder keeps its TCP connection and so its advisory locks. While it waits, a
//! waiter runs a watchdog: it looks up the sessions of every backend holding or waiting
//! for the key (`pg_locks`, and the session tag in `application_name`), ends those whose
//! heartbeat is older than their TTL (`pg_terminate_backend`, allowed between backends of
//! the same role), and sleeps until the next such expiry. A stalled holder thus loses its
//! locks at most a few milliseconds after its TTL once somebody wants them. `try_*` calls
//! do the same check once before reporting the lock as taken. Besides, the keepalive of
//! every session sweeps the sessions table (at most every 10 s per backend) and ends the
//! expired ones, so a stalled holder loses its locks within about 10 s of its TTL even
//! when nobody waits for them.
//!
//! # Cancel safety
//! The waiting future owns the connection. If it is dropped before it returns (the caller
//! gave up, a timeout fired), a guard terminates that backend from the pool, in the
//! background: its place in the queue, or a lock granted but not yet returned, is
//! released by the server, never left held silently. The next hold opens a fresh
//! connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Error, Result};
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use tokio::sync::Mutex;

use crate::error::{is_connection_loss, is_session_gone, map};
use crate::session::LeaseInner;
use crate::shared::Shared;

/// What a grant does once the advisory lock is taken.
pub(crate) enum Grant<'a> {
    /// A lock or a read/write lock: exclusive grants bump the fencing counter.
    Lock {
        /// Exclusive (`pg_advisory_lock`) or shared (`pg_advisory_lock_shared`).
        exclusive: bool,
    },
    /// An election: bump the term and become the leader with `value`.
    Campaign {
        /// The election's name.
        election: &'a str,
        /// The leader's value.
        value: &'a [u8],
    },
}

impl Grant<'_> {
    fn exclusive(&self) -> bool {
        match self {
            Grant::Lock { exclusive } => *exclusive,
            Grant::Campaign { .. } => true,
        }
    }
}

/// A granted advisory lock and the dedicated connection holding it.
pub(crate) struct Hold {
    conn: Mutex<Option<PgConnection>>,
    pid: i32,
    key2: i32,
    exclusive: bool,
}

/// Takes advisory lock `key2` of the schema for `lease`'s session, waiting if `wait`.
/// Returns the hold and the grant's token (the fencing counter for exclusive grants, 0
/// for shared ones), or `None` when not waiting and the lock is taken.
///
/// Cancel-safe: see the module docs.
pub(crate) async fn acquire(
    lease: &Arc<LeaseInner>,
    key2: i32,
    grant: Grant<'_>,
    wait: bool,
) -> Result<Option<(Arc<Hold>, i64)>> {
    let shared = &lease.shared;
    let (mut conn, pid) = lease.connection().await?;
    let mut fuse = Fuse {
        shared: Arc::clone(shared),
        session: lease.id,
        pid,
        armed: true,
    };
    let outcome = grant_on(lease, &mut conn, key2, &grant, wait).await;
    match outcome {
        Ok(Some(token)) => {
            fuse.armed = false;
            let hold = Arc::new(Hold {
                conn: Mutex::new(Some(conn)),
                pid,
                key2,
                exclusive: grant.exclusive(),
            });
            lease.track(&hold);
            Ok(Some((hold, token)))
        }
        Ok(None) => {
            fuse.armed = false;
            lease.give_back(conn, pid);
            Ok(None)
        }
        // The fuse terminates the backend, in case it holds the lock after the error.
        Err(error) => Err(error),
    }
}

/// As [`acquire`], waiting until granted.
pub(crate) async fn acquire_waiting(
    lease: &Arc<LeaseInner>,
    key2: i32,
    grant: Grant<'_>,
) -> Result<(Arc<Hold>, i64)> {
    acquire(lease, key2, grant, true).await?.ok_or_else(|| {
        Error::backend(
            crate::error::BACKEND,
            "a waiting lock grant returned without the lock",
        )
    })
}

async fn grant_on(
    lease: &Arc<LeaseInner>,
    conn: &mut PgConnection,
    key2: i32,
    grant: &Grant<'_>,
    wait: bool,
) -> Result<Option<i64>> {
    let shared = &lease.shared;
    if let Some(token) = run_grant(lease, conn, key2, grant, false).await? {
        return Ok(Some(token));
    }
    if !wait {
        // Somebody has it: end them if their session has expired, then try once more.
        let (reaped, _) = reap_key(shared, key2, lease.id).await?;
        if reaped == 0 {
            return Ok(None);
        }
        return run_grant(lease, conn, key2, grant, false).await;
    }
    let lost = lease.lost_token();
    let fallback = (lease.ttl / 3).max(Duration::from_millis(100));
    tokio::select! {
        biased;
        () = lost.cancelled() => Err(Error::SessionLost),
        granted = run_grant(lease, conn, key2, grant, true) => granted,
        never = watchdog(shared, key2, lease.id, fallback) => match never {},
    }
}

async fn run_grant(
    lease: &LeaseInner,
    conn: &mut PgConnection,
    key2: i32,
    grant: &Grant<'_>,
    wait: bool,
) -> Result<Option<i64>> {
    let shared = &lease.shared;
    let result = match grant {
        Grant::Lock { exclusive } => {
            sqlx::query_scalar(&shared.sql("SELECT {s}.lock_grant($1, $2, $3, $4, $5)"))
                .bind(shared.key1())
                .bind(key2)
                .bind(*exclusive)
                .bind(wait)
                .bind(lease.id)
                .fetch_one(&mut *conn)
                .await
        }
        Grant::Campaign { election, value } => {
            sqlx::query_scalar(&shared.sql("SELECT {s}.campaign_grant($1, $2, $3, $4, $5, $6)"))
                .bind(shared.key1())
                .bind(key2)
                .bind(*election)
                .bind(lease.id)
                .bind(*value)
                .bind(wait)
                .fetch_one(&mut *conn)
                .await
        }
    };
    result.map_err(|error| session_error(lease, error))
}

/// Maps an error on a session connection: a dead connection or an ended session is the
/// session lost.
pub(crate) fn session_error(lease: &LeaseInner, error: sqlx::Error) -> Error {
    if is_connection_loss(&error) || is_session_gone(&error) {
        tracing::debug!(session = lease.id, %error, "session connection failed");
        lease.fail();
        Error::SessionLost
    } else {
        map(error)
    }
}

/// Ends the expired sessions in the way of `key2`; returns how many were ended and how
/// long until the next participant's expiry.
async fn reap_key(shared: &Shared, key2: i32, own: i64) -> Result<(i32, Option<f64>)> {
    sqlx::query_as(&shared.sql("SELECT reaped, next_expiry FROM {s}.reap_key($1, $2, $3)"))
        .bind(shared.key1())
        .bind(key2)
        .bind(own)
        .fetch_one(&shared.pool)
        .await
        .map_err(map)
}

/// Runs beside a waiting grant, ending the holders (and waiters ahead) whose sessions
/// expire, at their expiry. Never returns; dropped with the wait.
async fn watchdog(shared: &Shared, key2: i32, own: i64, fallback: Duration) -> Infallible {
    loop {
        let pause = match reap_key(shared, key2, own).await {
            Ok((reaped, next)) => {
                if reaped > 0 {
                    tracing::info!(key = key2, reaped, "ended expired sessions holding a lock");
                }
                next.and_then(|secs| Duration::try_from_secs_f64(secs.clamp(0.0, 3600.0)).ok())
                    .map_or(fallback, |until| until + Duration::from_millis(20))
            }
            Err(error) => {
                tracing::warn!(key = key2, %error, "checking lock holders' sessions failed");
                fallback
            }
        };
        tokio::time::sleep(pause.max(Duration::from_millis(10))).await;
    }
}

/// Terminates a dedicated backend when dropped armed: a wait abandoned part-way.
struct Fuse {
    shared: Arc<Shared>,
    session: i64,
    pid: i32,
    armed: bool,
}

impl Drop for Fuse {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let (session, pid) = (self.session, self.pid);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = shared.terminate(session, pid).await {
                        tracing::warn!(session, pid, %error, "ending an abandoned lock wait failed");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(
                    session,
                    pid,
                    "lock wait abandoned outside a runtime; its connection closes"
                );
            }
        }
    }
}

impl Hold {
    /// Runs `f` on the hold's connection; `None` once the hold has been released.
    pub(crate) async fn with_conn<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut PgConnection) -> futures::future::BoxFuture<'c, T>,
    ) -> Option<T> {
        let mut conn = self.conn.lock().await;
        match conn.as_mut() {
            Some(conn) => Some(f(conn).await),
            None => None,
        }
    }

    /// Releases the advisory lock and hands the connection back to the session.
    ///
    /// # Errors
    /// [`Error::NotHeld`] if already released or not held by this connection,
    /// [`Error::SessionLost`] if the connection died (the server has released the lock).
    pub(crate) async fn release(&self, lease: &LeaseInner) -> Result<()> {
        let Some(mut conn) = self.conn.lock().await.take() else {
            return Err(Error::NotHeld);
        };
        let sql = if self.exclusive {
            "SELECT pg_advisory_unlock($1, $2)"
        } else {
            "SELECT pg_advisory_unlock_shared($1, $2)"
        };
        let unlocked: std::result::Result<bool, sqlx::Error> = sqlx::query_scalar(sql)
            .bind(lease.shared.key1())
            .bind(self.key2)
            .fetch_one(&mut conn)
            .await;
        match unlocked {
            Ok(true) => {
                lease.give_back(conn, self.pid);
                Ok(())
            }
            Ok(false) => {
                let _ = conn.close().await;
                Err(Error::NotHeld)
            }
            Err(error) => Err(session_error(lease, error)),
        }
    }

    /// Whether the hold's connection still answers (`true` while it is busy or released).
    pub(crate) async fn ping(&self) -> bool {
        let Ok(mut conn) = self.conn.try_lock() else {
            return true;
        };
        match conn.as_mut() {
            Some(c) => match c.ping().await {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(pid = self.pid, %error, "hold connection ping failed");
                    *conn = None;
                    false
                }
            },
            None => true,
        }
    }
}
