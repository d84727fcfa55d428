//! Checks made at connect: connection poolers.
//!
//! # Transaction pooling
//! Notifications (`LISTEN`) belong to a server connection. Behind a pooler in
//! transaction (or statement) pooling mode, consecutive statements of one client
//! connection may run on different server connections: the listening connection would
//! miss the wake-ups of waiters. Such a pooler is detected and refused
//! with [`Error::Unsupported`] naming the mode: connection A reads its backend pid;
//! connection B opens a transaction (pinning a server connection) and reads its pid;
//! A reads its pid again. Without a pooler, or with session pooling, A's two pids are
//! equal and differ from B's. With transaction pooling, A's server connection was free
//! between its statements: B was given it (same pid), or A's second statement ran on
//! another one (pid changed).
//!
//! Nothing else needs checking: holds are rows and the TTL is enforced by rows expiring,
//! so the backend never ends other backends (no `pg_signal_backend` is needed, and
//! processes may connect as different roles that share the schema).

use distsync_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, Row};

use crate::error::{map, BACKEND};

/// Refuses a transaction- or statement-pooling pooler (see the module docs).
///
/// # Errors
/// [`Error::Unsupported`] naming the pooling mode, or a connection error.
pub(crate) async fn refuse_transaction_pooling(options: &PgConnectOptions) -> Result<()> {
    let mut a = PgConnection::connect_with(options).await.map_err(map)?;
    let mut b = PgConnection::connect_with(options).await.map_err(map)?;
    let outcome = async {
        let first = pid(&mut a).await?;
        b.execute("BEGIN").await?;
        let other = pid(&mut b).await?;
        let second = pid(&mut a).await?;
        b.execute("ROLLBACK").await?;
        Ok::<_, sqlx::Error>((first, other, second))
    }
    .await;
    let _ = a.close().await;
    let _ = b.close().await;
    let (first, other, second) = outcome.map_err(map)?;
    if first != second || first == other {
        tracing::error!(
            first,
            second,
            other,
            "server connections change between statements: transaction pooling"
        );
        return Err(Error::unsupported(
            BACKEND,
            "connecting through a pooler in transaction (or statement) pooling mode \
             (the server connection changed between two statements of one client \
             connection; LISTEN wake-ups need pool_mode = session)",
        ));
    }
    Ok(())
}

/// The backend pid, read with the simple query protocol (no prepared statement, which a
/// transaction pooler would leave on a server connection another client then gets).
async fn pid(conn: &mut PgConnection) -> std::result::Result<i32, sqlx::Error> {
    conn.fetch_one("SELECT pg_backend_pid()").await?.try_get(0)
}
