//! Statements bounded by the request timeout (the URL's `timeout=`).
//!
//! sqlx bounds taking a connection from a pool (`acquire_timeout`), but not a statement
//! once sent: on a connection whose server went silent (a dropped route, a hung
//! middlebox, a partition) the reply is awaited until the operating system gives up on
//! the TCP connection, many minutes later. [`Bounded`] wraps any executor (a pool, a
//! connection) so that each statement run through it fails with a connection error
//! ([`timed_out`], an I/O `TimedOut`, which [`crate::error::map`] turns into the
//! transient [`distsync_core::Error::Connection`]) once its limit passes: a statement
//! through a pool within twice the request timeout (once to take a connection, once
//! for the reply), one on a connection already taken within the request timeout.
//!
//! A statement that timed out may still have been applied (its reply was lost), as
//! after any connection error. The connection it ran on is in doubt: a pool's takes it
//! back and tests it (sqlx pings every returned connection); one taken from
//! [`crate::connection::reused::Reused`] is closed ([`Taken::settle`](crate::connection::reused::Taken::settle)).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres};

/// An executor whose statements fail with [`timed_out`] after `limit`.
#[derive(Debug)]
pub(crate) struct Bounded<E> {
    executor: E,
    limit: Duration,
}

impl<E> Bounded<E> {
    /// `executor`, each of whose statements may take at most `limit`.
    pub(crate) fn new(executor: E, limit: Duration) -> Self {
        Self { executor, limit }
    }
}

impl<'p> Bounded<&'p PgPool> {
    /// `pool`, each statement within [`through_pool`].
    pub(crate) fn pool(pool: &'p PgPool) -> Self {
        Self::new(pool, through_pool(pool))
    }
}

/// The bound of one request through `pool`: twice its `acquire_timeout` (the request
/// timeout), once to take a connection and once for the reply.
pub(crate) fn through_pool(pool: &PgPool) -> Duration {
    pool.options().get_acquire_timeout() * 2
}

/// The error of a statement that had no reply within `limit`.
pub(crate) fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no reply from the server within {limit:?} (the URL's timeout=)"),
    ))
}

/// Whether `error` is [`timed_out`]'s.
pub(crate) fn is_timed_out(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// `future`, or [`timed_out`] once `limit` has passed (a statement that is not run
/// through an executor: `BEGIN`, `COMMIT`).
pub(crate) async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

impl<'c, E> Executor<'c> for Bounded<E>
where
    E: Executor<'c, Database = Postgres>,
{
    type Database = Postgres;

    /// The rows and results, the whole stream within the limit (counted from this
    /// call); after the limit, [`timed_out`] and the end.
    fn fetch_many<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        Q: 'q + Execute<'q, Postgres>,
    {
        let limit = self.limit;
        let deadline = tokio::time::Instant::now() + limit;
        let inner = self.executor.fetch_many(query);
        futures::stream::unfold(Some(inner), move |state| async move {
            let mut inner = state?;
            match tokio::time::timeout_at(deadline, inner.next()).await {
                Ok(Some(item)) => Some((item, Some(inner))),
                Ok(None) => None,
                Err(_) => Some((Err(timed_out(limit)), None)),
            }
        })
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        Q: 'q + Execute<'q, Postgres>,
    {
        within(self.limit, self.executor.fetch_optional(query)).boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        within(self.limit, self.executor.prepare_with(sql, parameters)).boxed()
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        within(self.limit, self.executor.describe(sql)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    #[tokio::test]
    async fn a_statement_past_its_limit_fails_as_a_connection_error_and_others_answer() {
        let Some(url) = distsync_conformance::server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let short = Duration::from_millis(200);
        // A single-row statement (fetch_optional) and a streamed one (fetch_all).
        let started = Instant::now();
        let error = sqlx::query("SELECT pg_sleep(2)")
            .fetch_optional(Bounded::new(&pool, short))
            .await
            .unwrap_err();
        assert!(is_timed_out(&error), "{error}");
        let error = sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(2)")
            .fetch_all(Bounded::new(&pool, short))
            .await
            .unwrap_err();
        assert!(is_timed_out(&error), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(
            crate::error::map(error),
            distsync_core::Error::Connection { .. }
        ));
        // Within its limit, a statement answers (once the connections are free again).
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(Bounded::new(&pool, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(one, 1);
        let rows = sqlx::query_scalar::<_, i32>("SELECT generate_series(1, 3)")
            .fetch_all(Bounded::new(&pool, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 2, 3]);
    }
}
