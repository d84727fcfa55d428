//! Holds: session-level advisory locks, each on a dedicated connection of its session.
//!
//! # Waiting
//! A grant first tries (`pg_try_advisory_lock`, one round trip when the lock is free).
//! Otherwise the waiter blocks in `pg_advisory_lock` on its own connection, so
//! PostgreSQL's lock queue orders the waiters (FIFO; a waiting exclusive request blocks
//! shared requests that arrive after it) and hands the lock over the moment it is
//! released, without polling. The fencing counter is bumped by the same statement, right
//! after the grant and the lease gate.
//!
//! # The lease gate: no grant while the previous holder may believe it holds
//! PostgreSQL frees an advisory lock the instant its connection closes, which its holder
//! may not see (a reset by a proxy, a network partition): it believes it holds until its
//! session's client-side deadline (`send time of its last acknowledged renewal + TTL −
//! margin`, see `distsync_core::SessionOptions`). So every grant is recorded in
//! `lock_grants` (name, backend pid, session), and:
//! - a **clean release** (`unlock()`, `resign()`, a guard dropped inside a runtime, a
//!   closed session) deletes the row in the statement that unlocks, and the next waiter
//!   is granted at once;
//! - a hold freed **without a release** (its connection closed, its process died, its
//!   session declared lost) leaves its row; the next grant of the name (schema function
//!   `grant_gate`) finds it and is held back until that row's session has expired in
//!   the store: `expires_at` = the server's time of the last renewal + TTL, which is
//!   never earlier than the holder's client-side deadline (the renewal was sent before
//!   the server ran it). The waiter keeps the advisory lock (its place stays first) and
//!   sleeps until that instant, then passes the gate again (a renewal that landed
//!   meanwhile moves the instant on); no polling. A `try_*` call reports the lock as
//!   taken meanwhile.
//!
//! The same holds for write locks, read locks (a writer waits for readers that vanished
//! without a release; readers wait for a vanished writer) and leadership. A session its
//! owner declares lost (a connection of it died, its renewals failed, the store said it
//! is gone) is ended by terminating its connections but keeping its row until it expires,
//! so its holds, leader rows and double-barrier entries count until then; a session
//! closed (or dropped) while healthy is deleted, releasing everything at once. A session
//! revoked from another process (`Backend::revoke_session`) is deleted too, as etcd's
//! lease revoke frees at once.
//!
//! # Noticing a dead hold connection
//! Each hold's connection is a `Conn` ([`crate::conn`]): a read is always pending on it, so
//! a connection closed or reset under a hold declares the session lost within
//! milliseconds, before the gate lets anyone else in.
//!
//! # TTL enforcement
//! A paused holder keeps its TCP connection and so its advisory locks. While it waits, a
//! waiter runs a watchdog: it looks up the sessions of every backend holding or waiting
//! for the key (`pg_locks`, and the session tag in `application_name`), ends those whose
//! heartbeat is older than their TTL (`pg_terminate_backend`, allowed between backends of
//! the same role, checked at connect), and sleeps until the next such expiry. A stalled
//! holder thus loses its locks at most a few milliseconds after its TTL once somebody
//! wants them. `try_*` calls do the same check once before reporting the lock as taken.
//! Besides, the keepalive of every session sweeps the sessions table (at most every 10 s
//! per backend) and ends the expired ones, so a stalled holder loses its locks within
//! about 10 s of its TTL even when nobody waits for them. All of this runs on the
//! backend's reaper connections, never on the pool that STM bodies can exhaust.
//!
//! # Cancel safety
//! If the waiting future is dropped before it returns (the caller gave up, a timeout
//! fired), a guard abandons the grant from the reaper connections, in the background:
//! deletes its grant row, if any, and terminates its backend, so its place in the queue,
//! or a lock granted but not yet returned, is released by the server, never left held.
//! The next hold opens a fresh connection. A grant statement that fails (including one
//! whose name has lost its counter row, which releases the advisory lock and raises)
//! abandons its connection the same way: a connection is never reused while it may hold
//! an advisory lock.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::{Error, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgListener;

use crate::conn::Conn;
use crate::error::{is_connection_loss, is_session_gone, map, sqlstate};
use crate::session::LeaseInner;
use crate::shared::{LockKind, Shared};

/// What a grant does once the advisory lock is taken.
#[derive(Clone, Copy)]
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

/// The outcome of one grant statement.
enum Step {
    /// Granted, with the token (0 for shared grants).
    Granted(i64),
    /// Held back by the lease gate for this long; the connection keeps the lock.
    Gated(Duration),
    /// A failed try.
    Taken,
}

/// A granted advisory lock and the dedicated connection holding it.
pub(crate) struct Hold {
    conn: Mutex<Option<Arc<Conn>>>,
    key2: i32,
    exclusive: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the advisory lock of `kind` `name` for `lease`'s session, waiting if `wait`.
/// Returns the hold and the grant's token (the fencing counter for exclusive grants, 0
/// for shared ones), or `None` when not waiting and the lock is taken. A cached name id
/// whose row has gone (the grant statement raised `DS002` and released the lock) is
/// looked up afresh, once.
///
/// Cancel-safe: see the module docs.
pub(crate) async fn acquire(
    lease: &Arc<LeaseInner>,
    kind: LockKind,
    name: &str,
    grant: Grant<'_>,
    wait: bool,
) -> Result<Option<(Arc<Hold>, i64)>> {
    let shared = &lease.shared;
    let mut retried = false;
    loop {
        let key2 = shared.name_id(kind, name).await?;
        match acquire_key(lease, key2, grant, wait).await {
            Err(error) if !retried && is_missing_name(&error) => {
                tracing::debug!(key = key2, "lock name row gone; registering the name again");
                shared.forget_name(kind, name);
                retried = true;
            }
            other => return other,
        }
    }
}

/// As [`acquire`], waiting until granted.
pub(crate) async fn acquire_waiting(
    lease: &Arc<LeaseInner>,
    kind: LockKind,
    name: &str,
    grant: Grant<'_>,
) -> Result<(Arc<Hold>, i64)> {
    acquire(lease, kind, name, grant, true)
        .await?
        .ok_or_else(|| {
            Error::backend(
                crate::error::BACKEND,
                "a waiting lock grant returned without the lock",
            )
        })
}

/// Whether `error` is the grant statement's `DS002`: the name has no counter row.
fn is_missing_name(error: &Error) -> bool {
    match error {
        Error::Backend { source, .. } => source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(|error| sqlstate(error).as_deref() == Some("DS002")),
        _ => false,
    }
}

/// [`acquire`] on the name's key `key2`.
async fn acquire_key(
    lease: &Arc<LeaseInner>,
    key2: i32,
    grant: Grant<'_>,
    wait: bool,
) -> Result<Option<(Arc<Hold>, i64)>> {
    let shared = &lease.shared;
    let conn = lease.connection().await?;
    let mut fuse = Fuse {
        shared: Arc::clone(shared),
        session: lease.id,
        pid: conn.pid(),
        armed: true,
    };
    let outcome = grant_on(lease, &conn, key2, &grant, wait).await;
    match outcome {
        Ok(Some(token)) => {
            fuse.armed = false;
            conn.watch_for(Some(Arc::downgrade(lease)));
            if conn.is_dead() {
                // Died between the grant and the watch: the lock is gone already.
                lease.fail();
                return Err(Error::SessionLost);
            }
            let hold = Arc::new(Hold {
                conn: Mutex::new(Some(conn)),
                key2,
                exclusive: grant.exclusive(),
            });
            Ok(Some((hold, token)))
        }
        Ok(None) => {
            fuse.armed = false;
            lease.give_back(conn);
            Ok(None)
        }
        // The fuse abandons the connection, in case it holds the lock after the error.
        Err(error) => Err(error),
    }
}

async fn grant_on(
    lease: &Arc<LeaseInner>,
    conn: &Conn,
    key2: i32,
    grant: &Grant<'_>,
    wait: bool,
) -> Result<Option<i64>> {
    let shared = &lease.shared;
    match run_grant(lease, conn, key2, grant, false, true).await? {
        Step::Granted(token) => return Ok(Some(token)),
        Step::Taken | Step::Gated(_) => {}
    }
    if !wait {
        // Somebody has it: end them if their session has expired, then try once more.
        let (reaped, _) = reap_key(shared, key2, lease.id).await?;
        if reaped == 0 {
            return Ok(None);
        }
        return match run_grant(lease, conn, key2, grant, false, true).await? {
            Step::Granted(token) => Ok(Some(token)),
            Step::Taken | Step::Gated(_) => Ok(None),
        };
    }
    let lost = lease.lost_token();
    let fallback = (lease.ttl / 3).max(Duration::from_millis(100));
    let mut relock = true;
    loop {
        let step = tokio::select! {
            biased;
            () = lost.cancelled() => return Err(Error::SessionLost),
            step = run_grant(lease, conn, key2, grant, true, relock) => step?,
            never = watchdog(shared, key2, lease.id, fallback) => match never {},
        };
        match step {
            Step::Granted(token) => return Ok(Some(token)),
            Step::Gated(pause) => {
                // This connection holds the advisory lock: later passes skip locking.
                relock = false;
                tracing::debug!(
                    session = lease.id,
                    key = key2,
                    ?pause,
                    "grant held back until the previous holder's session expires"
                );
                tokio::select! {
                    biased;
                    () = lost.cancelled() => return Err(Error::SessionLost),
                    () = tokio::time::sleep(pause + Duration::from_millis(2)) => {}
                }
            }
            Step::Taken => {
                return Err(Error::backend(
                    crate::error::BACKEND,
                    "a waiting lock grant returned without the lock",
                ))
            }
        }
    }
}

async fn run_grant(
    lease: &LeaseInner,
    conn: &Conn,
    key2: i32,
    grant: &Grant<'_>,
    wait: bool,
    relock: bool,
) -> Result<Step> {
    let shared = &lease.shared;
    let (key1, session) = (shared.key1(), lease.id);
    let result: std::result::Result<(Option<i64>, Option<f64>), sqlx::Error> = match grant {
        Grant::Lock { exclusive } => {
            let sql =
                shared.sql("SELECT o_token, o_wait FROM {s}.lock_grant($1, $2, $3, $4, $5, $6)");
            let exclusive = *exclusive;
            conn.run(move |c: &mut PgListener| {
                async move {
                    sqlx::query_as(&sql)
                        .bind(key1)
                        .bind(key2)
                        .bind(exclusive)
                        .bind(wait)
                        .bind(session)
                        .bind(relock)
                        .fetch_one(&mut *c)
                        .await
                }
                .boxed()
            })
            .await
        }
        Grant::Campaign { election, value } => {
            let sql = shared
                .sql("SELECT o_token, o_wait FROM {s}.campaign_grant($1, $2, $3, $4, $5, $6, $7)");
            let (election, value) = ((*election).to_owned(), value.to_vec());
            conn.run(move |c: &mut PgListener| {
                async move {
                    sqlx::query_as(&sql)
                        .bind(key1)
                        .bind(key2)
                        .bind(election)
                        .bind(session)
                        .bind(value)
                        .bind(wait)
                        .bind(relock)
                        .fetch_one(&mut *c)
                        .await
                }
                .boxed()
            })
            .await
        }
    };
    match result {
        Ok((Some(token), _)) => Ok(Step::Granted(token)),
        Ok((None, Some(secs))) => Ok(Step::Gated(
            Duration::try_from_secs_f64(secs.clamp(0.0, 3600.0)).unwrap_or_default(),
        )),
        Ok((None, None)) => Ok(Step::Taken),
        Err(error) => Err(session_error(lease, error)),
    }
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
/// long until the next participant's expiry. On the reaper's connections.
async fn reap_key(shared: &Shared, key2: i32, own: i64) -> Result<(i32, Option<f64>)> {
    sqlx::query_as(&shared.sql("SELECT reaped, next_expiry FROM {s}.reap_key($1, $2, $3)"))
        .bind(shared.key1())
        .bind(key2)
        .bind(own)
        .fetch_one(&shared.reaper)
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

/// Abandons a dedicated backend when dropped armed: a wait given up part-way, or a
/// grant statement that failed.
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
                    if let Err(error) = shared.abandon(session, pid).await {
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
    fn conn(&self) -> Option<Arc<Conn>> {
        lock(&self.conn).clone()
    }

    /// Runs `f` on the hold's connection; `None` once the hold has been released.
    pub(crate) async fn with_conn<T, F>(&self, f: F) -> Option<std::result::Result<T, sqlx::Error>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgListener) -> BoxFuture<'c, std::result::Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let conn = self.conn()?;
        Some(conn.run(f).await)
    }

    /// Releases the advisory lock cleanly (deleting its grant row) and hands the
    /// connection back to the session.
    ///
    /// # Errors
    /// [`Error::NotHeld`] if already released or not held by this connection,
    /// [`Error::SessionLost`] if the connection died (the server has released the lock).
    pub(crate) async fn release(&self, lease: &LeaseInner) -> Result<()> {
        let Some(conn) = lock(&self.conn).take() else {
            return Err(Error::NotHeld);
        };
        let sql = lease.shared.sql("SELECT {s}.lock_release($1, $2, $3)");
        let (key1, key2, exclusive) = (lease.shared.key1(), self.key2, self.exclusive);
        let unlocked = conn
            .run(move |c: &mut PgListener| {
                async move {
                    sqlx::query_scalar::<_, bool>(&sql)
                        .bind(key1)
                        .bind(key2)
                        .bind(exclusive)
                        .fetch_one(&mut *c)
                        .await
                }
                .boxed()
            })
            .await;
        match unlocked {
            Ok(true) => {
                conn.watch_for(None);
                lease.give_back(conn);
                Ok(())
            }
            Ok(false) => Err(Error::NotHeld),
            Err(error) => Err(session_error(lease, error)),
        }
    }
}
