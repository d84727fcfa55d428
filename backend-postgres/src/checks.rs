//! Checks made at connect: connection poolers, and the right to end other backends.
//!
//! # Transaction pooling
//! Locks are session-level advisory locks and belong to a server connection. Behind a
//! pooler in transaction (or statement) pooling mode, consecutive statements of one
//! client connection may run on different server connections: a lock would stay with a
//! server connection handed to other clients. Such a pooler is detected and refused
//! with [`Error::Unsupported`] naming the mode: connection A reads its backend pid;
//! connection B opens a transaction (pinning a server connection) and reads its pid;
//! A reads its pid again. Without a pooler, or with session pooling, A's two pids are
//! equal and differ from B's. With transaction pooling, A's server connection was free
//! between its statements: B was given it (same pid), or A's second statement ran on
//! another one (pid changed).
//!
//! # Ending other backends
//! TTL enforcement ends stalled holders with `pg_terminate_backend`, which a role may use
//! on backends of roles it is a member of, or on any non-superuser backend if it is a
//! member of `pg_signal_backend`. At connect the backend reads which roles the
//! connections of this schema's sessions use; if it could not end some of them, that is
//! an [`Error::Unsupported`] naming the roles and the fix (`GRANT pg_signal_backend`, or
//! one role for every process), rather than a TTL that silently goes unenforced.

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
             connection; session-level advisory locks need pool_mode = session)",
        ));
    }
    Ok(())
}

/// The backend pid, read with the simple query protocol (no prepared statement, which a
/// transaction pooler would leave on a server connection another client then gets).
async fn pid(conn: &mut PgConnection) -> std::result::Result<i32, sqlx::Error> {
    conn.fetch_one("SELECT pg_backend_pid()").await?.try_get(0)
}

/// Refuses to run when this role could not end the connections of some sessions of the
/// schema (see the module docs). `prefix` is the sessions' `application_name` prefix.
///
/// # Errors
/// [`Error::Unsupported`] naming the roles, or a database error.
pub(crate) async fn require_signal_rights(pool: &sqlx::PgPool, prefix: &str) -> Result<()> {
    let (role, foreign): (String, Vec<String>) = sqlx::query_as(
        "SELECT current_user::text, coalesce(array_agg(DISTINCT r.rolname::text) \
                FILTER (WHERE r.rolname IS NOT NULL), '{}') \
           FROM pg_stat_activity a \
           JOIN pg_roles r ON r.oid = a.usesysid \
          WHERE starts_with(a.application_name, $1) \
            AND NOT pg_has_role(current_user, a.usesysid, 'MEMBER') \
            AND NOT (pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') \
                     AND NOT r.rolsuper) \
            AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .map_err(map)?;
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::unsupported(
        BACKEND,
        format!(
            "enforcing session TTLs as role {role:?}, which may not end the connections \
             of sessions held by roles {foreign:?} (GRANT pg_signal_backend TO the role, \
             or connect every process as one role)"
        ),
    ))
}
