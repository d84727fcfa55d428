//! Connections taken from a sqlx pool once and reused statement after statement,
//! for the holds' statements (joins, checks, releases, session rows, names).
//!
//! sqlx (0.8) pings every connection a caller gives back to a pool (`return_to_pool`
//! sends a Sync and waits for its ReadyForQuery, in a task of its own), and has no
//! setting to turn that off. So every statement run on `&PgPool` costs the server and
//! the client a second round trip's work, and keeps its connection out of use until
//! the ping is answered: with many sessions locking at once on a two-core machine,
//! that work was about half of what the server and the client did per statement.
//! [`Reused`] keeps the connections it takes out of the pool instead: a finished
//! statement puts its connection on a list of its own, and the next statement takes it
//! from there, with no ping.
//!
//! - **At most `size` connections**, the pool's own `max_connections`
//!   (`hold_connections=` in the URL), are out at once: a caller takes a permit first
//!   (in arrival order, waiting at most the request timeout, then
//!   [`sqlx::Error::PoolTimedOut`] as the pool would), then the most recently used
//!   kept connection, or a new one from the pool.
//! - **Liveness as the pool's**: a kept connection idle for
//!   [`crate::connection::liveness::IDLE_TEST`], or any within the window after a connection of the
//!   process was found dead, is pinged before it is handed out (`liveness`); one whose
//!   ping fails is closed and the next is tried.
//! - **Statements are bounded**: each fails within the request timeout
//!   ([`crate::connection::bounded`]); the ping of a kept connection too.
//! - **A connection in doubt goes back to the pool**: after a statement that failed
//!   with a connection error, or whose caller was dropped before [`Taken::settle`] (a
//!   cancelled call may leave the protocol mid-way), the connection is given back to
//!   the pool, whose ping drains it or finds it broken and closes it. One whose
//!   statement had no reply within the request timeout is closed instead (the pool's
//!   ping would wait on a silent server as long as the statement did).
//! - **Retired as the pool would**: a connection kept for [`KEEP_AT_MOST`] goes back
//!   to the pool (which applies its own lifetime rules), and one left unused for
//!   [`IDLE_CLOSE`] is closed, so a burst of callers does not keep its connections
//!   open for ever.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use distsync_core::raw::locked;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::connection::bounded::{is_timed_out, within, Bounded};
use crate::connection::liveness;
use crate::error::is_connection_loss;

/// How long a connection is kept out of the pool at most (sqlx's default
/// `max_lifetime`).
pub(crate) const KEEP_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// A kept connection unused this long is closed (sqlx's default `idle_timeout`).
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(10 * 60);

/// A pool's connections, kept out of it between statements (see the module docs).
pub(crate) struct Reused {
    pool: PgPool,
    permits: Semaphore,
    idle: Mutex<Vec<Kept>>,
    wait_at_most: Duration,
}

/// A connection on the idle list.
struct Kept {
    conn: PoolConnection<Postgres>,
    /// When it was taken from the pool.
    taken: Instant,
    /// When its last statement finished.
    since: Instant,
}

impl Reused {
    /// Up to the pool's `max_connections`; a caller waits at most the pool's
    /// `acquire_timeout` for one.
    pub(crate) fn from_pool(pool: PgPool) -> Self {
        let options = pool.options();
        let (size, wait_at_most) = (options.get_max_connections(), options.get_acquire_timeout());
        Self::new(pool, size, wait_at_most)
    }

    /// Up to `size` connections of `pool`; a caller waits at most `wait_at_most` for
    /// one.
    pub(crate) fn new(pool: PgPool, size: u32, wait_at_most: Duration) -> Self {
        Self {
            pool,
            permits: Semaphore::new(usize::try_from(size.max(1)).unwrap_or(usize::MAX)),
            idle: Mutex::new(Vec::new()),
            wait_at_most,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Kept>> {
        locked(&self.idle)
    }

    /// Kept connections right now (tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.idle().len()
    }

    /// A connection for one statement (or a few in a row). Run them on
    /// [`Taken::conn`], then hand their result to [`Taken::settle`].
    ///
    /// Cancel-safe: a call dropped while waiting takes nothing.
    ///
    /// # Errors
    /// [`sqlx::Error::PoolTimedOut`] when no connection was free within the request
    /// timeout; the pool's error when opening a connection failed.
    pub(crate) async fn take(&self) -> Result<Taken<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.wait_at_most, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let (popped, stale) = {
                let mut idle = self.idle();
                let popped = idle.pop();
                // The least recently used, when unused for long: closed.
                let stale = match idle.first() {
                    Some(oldest) if oldest.since.elapsed() >= IDLE_CLOSE => Some(idle.remove(0)),
                    _ => None,
                };
                (popped, stale)
            };
            if let Some(mut stale) = stale {
                stale.conn.close_on_drop();
            }
            let Some(mut kept) = popped else {
                let conn = self.pool.acquire().await?;
                return Ok(Taken::new(self, permit, conn, Instant::now()));
            };
            if kept.taken.elapsed() >= KEEP_AT_MOST {
                // Back to the pool, which retires it or hands it out anew.
                drop(kept.conn);
                continue;
            }
            if liveness::should_test(kept.since.elapsed()) {
                if let Err(error) = within(self.wait_at_most, kept.conn.ping()).await {
                    tracing::debug!(%error, "a kept connection failed its test; closing it");
                    liveness::connection_failed();
                    kept.conn.close_on_drop();
                    continue;
                }
            }
            return Ok(Taken::new(self, permit, kept.conn, kept.taken));
        }
    }
}

/// A connection taken for a statement: kept for the next one when dropped after
/// [`Taken::settle`] found it sound, given back to the pool otherwise.
pub(crate) struct Taken<'a> {
    owner: &'a Reused,
    conn: Option<PoolConnection<Postgres>>,
    taken: Instant,
    sound: bool,
    // Released after the connection is back on the idle list (fields drop after
    // `Drop::drop`), so the next permit holder finds it there.
    _permit: SemaphorePermit<'a>,
}

impl<'a> Taken<'a> {
    fn new(
        owner: &'a Reused,
        permit: SemaphorePermit<'a>,
        conn: PoolConnection<Postgres>,
        taken: Instant,
    ) -> Self {
        Self {
            owner,
            conn: Some(conn),
            taken,
            sound: false,
            _permit: permit,
        }
    }

    /// The connection, to run statements on, each within the request timeout.
    pub(crate) fn conn(&mut self) -> Bounded<&mut PgConnection> {
        let limit = self.owner.wait_at_most;
        let conn = self
            .conn
            .as_deref_mut()
            .expect("a Taken holds its connection until dropped");
        Bounded::new(conn, limit)
    }

    /// Records how the statements ended: the connection is kept for the next unless
    /// one failed with a connection error, and closed if one had no reply in time.
    /// Returns `result`.
    pub(crate) fn settle<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.sound = match &result {
            Ok(_) => true,
            Err(error) => {
                if is_timed_out(error) {
                    if let Some(conn) = self.conn.as_mut() {
                        conn.close_on_drop();
                    }
                }
                !is_connection_loss(error)
            }
        };
        result
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.sound {
            self.owner.idle().push(Kept {
                conn,
                taken: self.taken,
                since: Instant::now(),
            });
        }
        // Otherwise `conn` drops here: back to the pool, which tests it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgPoolOptions;

    fn url() -> Option<String> {
        distsync_conformance::server_url("DISTSYNC_POSTGRES_URL")
    }

    async fn pool(size: u32) -> PgPool {
        let url = url().expect("DISTSYNC_POSTGRES_URL");
        PgPoolOptions::new()
            .max_connections(size)
            .connect(&url)
            .await
            .unwrap()
    }

    async fn backend_pid(reused: &Reused) -> i32 {
        let mut taken = reused.take().await.unwrap();
        let result = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(taken.conn())
            .await;
        taken.settle(result).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_without_going_back_to_the_pool() {
        if url().is_none() {
            return;
        }
        let pool = pool(2).await;
        let reused = Reused::new(pool.clone(), 2, Duration::from_secs(5));
        let first = backend_pid(&reused).await;
        assert_eq!(reused.kept(), 1);
        for _ in 0..5 {
            assert_eq!(backend_pid(&reused).await, first);
        }
        // Kept out of the pool all along: the pool sees it as in use.
        assert_eq!(pool.size() - u32::try_from(pool.num_idle()).unwrap(), 1);
    }

    #[tokio::test]
    async fn no_more_than_size_are_out_and_a_caller_waits_at_most_the_timeout() {
        if url().is_none() {
            return;
        }
        let reused = Reused::new(pool(1).await, 1, Duration::from_millis(200));
        let held = reused.take().await.unwrap();
        assert!(matches!(
            reused.take().await.err(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        drop(held);
        // Never settled: given back to the pool, not kept.
        assert_eq!(reused.kept(), 0);
        backend_pid(&reused).await;
        assert_eq!(reused.kept(), 1);
    }

    #[tokio::test]
    async fn a_statement_error_keeps_the_connection_and_a_killed_one_is_replaced() {
        if url().is_none() {
            return;
        }
        let reused = Reused::new(pool(2).await, 2, Duration::from_secs(5));
        let first = backend_pid(&reused).await;
        // An error of the statement (division by zero): the connection is sound.
        let mut taken = reused.take().await.unwrap();
        let result = sqlx::query_scalar::<_, i32>("SELECT 1 / 0")
            .fetch_one(taken.conn())
            .await;
        assert!(taken.settle(result).is_err());
        drop(taken);
        assert_eq!(backend_pid(&reused).await, first);
        // The server ends the kept connection: its next statement fails with a
        // connection error, and the one after runs on another connection.
        let killer = pool(1).await;
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(first)
            .fetch_one(&killer)
            .await
            .unwrap();
        assert!(killed);
        let mut taken = reused.take().await.unwrap();
        let result = sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(taken.conn())
            .await;
        let failed = taken.settle(result);
        drop(taken);
        if let Err(error) = failed {
            assert!(is_connection_loss(&error), "{error}");
        }
        // Whether the kill reached it before its statement or its liveness test
        // caught it, the dead connection is not handed out again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut taken = reused.take().await.unwrap();
            let result = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(taken.conn())
                .await;
            match taken.settle(result) {
                Ok(pid) => {
                    assert_ne!(pid, first);
                    break;
                }
                Err(error) => {
                    assert!(is_connection_loss(&error), "{error}");
                    assert!(Instant::now() < deadline, "no live connection: {error}");
                }
            }
        }
    }
}
