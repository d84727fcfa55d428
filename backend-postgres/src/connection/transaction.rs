//! Transactions on a pool's connections whose `BEGIN` is cancel-safe.
//!
//! sqlx (0.8 and 0.9) counts a transaction as open only once the server has answered
//! its `BEGIN`, and rolls back on drop only a transaction it counts. A future dropped
//! while the `BEGIN` is in flight (a request timeout, a caller's `select!`, an aborted
//! task) therefore leaves the server's session inside a transaction that nothing rolls
//! back, and the pool's test of a returned connection (a ping) does not look at the
//! session's transaction state: the next caller given that connection runs its
//! statements inside the stale transaction. They are never committed, and after the
//! first error every statement on it is refused ("current transaction is aborted"), or
//! its own `BEGIN ISOLATION LEVEL ...` is ("must be called before any query"). A loaded
//! machine, whose replies come late, makes such timeouts common.
//!
//! [`PgTransaction`] takes its connection from the pool first and begins on it: a begin
//! that did not complete, for whatever reason, closes the connection instead of giving it
//! back. Once begun it behaves as sqlx's `Transaction`: dropped without a commit, its
//! rollback is queued and sent before the connection serves anyone else.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, PgPool, Postgres, TransactionManager};

use crate::connection::bounded::within;

/// The `BEGIN` of a read-only transaction on one snapshot (an export, a status report, a
/// count): every statement of it sees the same state.
pub(crate) const READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// A transaction on a connection of a pool (see the module docs). Statements run on
/// `&mut *tx`; [`PgTransaction::commit`] ends it, and dropping it rolls it back.
#[derive(Debug)]
pub(crate) struct PgTransaction {
    conn: PoolConnection<Postgres>,
}

/// A connection whose `BEGIN` is in flight: closed when dropped before [`Self::begun`].
struct Beginning(Option<PoolConnection<Postgres>>);

impl Beginning {
    fn conn(&mut self) -> &mut PgConnection {
        self.0
            .as_deref_mut()
            .expect("a Beginning holds its connection until begun")
    }

    fn begun(mut self) -> PoolConnection<Postgres> {
        self.0
            .take()
            .expect("a Beginning holds its connection until begun")
    }
}

impl Drop for Beginning {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            // The session may be inside a transaction sqlx does not know of.
            conn.close_on_drop();
        }
    }
}

impl PgTransaction {
    /// Takes a connection of `pool` (within the pool's `acquire_timeout`) and runs
    /// `statement` (`BEGIN` when `None`) on it within the same bound again.
    ///
    /// Cancel-safe: a call dropped before it returns leaves no transaction open on any
    /// connection of the pool (the one it took is closed).
    ///
    /// # Errors
    /// The pool's error when no connection was free or could be opened; the server's,
    /// or [`crate::connection::bounded::timed_out`]'s, when the `BEGIN` failed.
    pub(crate) async fn begin(
        pool: &PgPool,
        statement: Option<&'static str>,
    ) -> Result<Self, sqlx::Error> {
        let limit = pool.options().get_acquire_timeout();
        let mut beginning = Beginning(Some(pool.acquire().await?));
        within(
            limit,
            PgTransactionManager::begin(beginning.conn(), statement.map(Cow::Borrowed)),
        )
        .await?;
        Ok(Self {
            conn: beginning.begun(),
        })
    }

    /// Commits.
    ///
    /// Cancel-safety: dropped before it returns, the transaction may or may not have
    /// committed; the connection then goes back to the pool after a rollback that finds
    /// nothing to undo, or with the commit's outcome.
    ///
    /// # Errors
    /// The server's, when the commit failed (nothing was committed), or a connection
    /// error (the outcome is unknown).
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::commit(&mut self.conn).await
    }

    /// Rolls back now, rather than when dropped.
    ///
    /// Cancel-safety: cancel safe; the rollback is then sent before the connection
    /// serves anyone else.
    ///
    /// # Errors
    /// A connection error (the server ends the transaction with the session).
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::rollback(&mut self.conn).await
    }
}

impl Deref for PgTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for PgTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        // Queued, and sent before the pool hands the connection out again (its test on
        // return flushes it); a no-op once committed or rolled back.
        PgTransactionManager::start_rollback(&mut self.conn);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;
    use sqlx::Connection;

    use super::*;

    fn url() -> Option<String> {
        distsync_conformance::server_url("DISTSYNC_POSTGRES_URL")
    }

    /// A pool of one connection, not tested when taken (no round trip of its own before
    /// a caller's statements).
    async fn pool(url: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect(url)
            .await
            .unwrap()
    }

    /// Whether the session of the pool's one connection is inside a transaction: in
    /// one, `now()` is the transaction's start, earlier than the statement's. Sent with
    /// the simple query protocol (no arguments), one message whose receipt starts both
    /// the statement and, outside a transaction, its own implicit one.
    async fn in_transaction(pool: &PgPool) -> bool {
        use sqlx::{Executor, Row};
        pool.fetch_one("SELECT now() <> statement_timestamp()")
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn a_begin_dropped_in_flight_leaves_no_transaction_on_the_pool() {
        let Some(url) = url() else {
            return;
        };
        let pool = pool(&url).await;
        let mut observer = PgConnection::connect(&url).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        // A begin whose reply takes two seconds: its transaction is open on the server
        // from the first statement on, while the caller still waits.
        const SLOW_BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT pg_sleep(2)";
        let mut begin = Box::pin(PgTransaction::begin(&pool, Some(SLOW_BEGIN)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let running: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE pid = $1 AND state = 'active' AND query = $2)",
            )
            .bind(pid)
            .bind(SLOW_BEGIN)
            .fetch_one(&mut observer)
            .await
            .unwrap();
            if running {
                break;
            }
            assert!(
                futures::poll!(begin.as_mut()).is_pending(),
                "the begin ended before it was seen running"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the begin never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The caller gives up while the server runs the begin.
        drop(begin);
        assert!(!in_transaction(&pool).await);
        let tx = PgTransaction::begin(&pool, Some("BEGIN ISOLATION LEVEL SERIALIZABLE"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_is_rolled_back_and_a_committed_one_stays() {
        let Some(url) = url() else {
            return;
        };
        let pool = pool(&url).await;
        let table = format!("pg_transaction_test_{}", std::process::id());
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {table} (v int)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let mut tx = PgTransaction::begin(&pool, None).await.unwrap();
        sqlx::query(&format!("INSERT INTO {table} VALUES (1)"))
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        assert!(!in_transaction(&pool).await);
        let mut tx = PgTransaction::begin(&pool, None).await.unwrap();
        sqlx::query(&format!("INSERT INTO {table} VALUES (2)"))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows: Vec<i32> = sqlx::query_scalar(&format!("SELECT v FROM {table}"))
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![2]);
    }
}
