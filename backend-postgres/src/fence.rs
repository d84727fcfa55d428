//! Fencing at a PostgreSQL resource: admit a write only if its fencing token is not
//! stale, in the same transaction as the write.
//!
//! The rule of [`distsync_core::fence`], as one statement on a fence table of the
//! application's (`resource text primary key, token bigint`): the row of `resource`
//! takes `token` only if its token is not higher. Call [`admit`] first inside the
//! transaction that writes the protected data, and commit only if it answers `true`:
//! the row lock it takes serialises concurrent writers of one resource, so a stale
//! holder's transaction either finds the newer token and rolls back, or runs before
//! the newer holder's (and is then overwritten by it).
//!
//! ```no_run
//! # async fn f(pool: sqlx::PgPool, guard: distsync::LockGuard) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! if distsync::store::postgres::fence::admit(&mut tx, "app.fences", "accounts/42", guard.token()).await? {
//!     sqlx::query("UPDATE app.accounts SET balance = balance + 1 WHERE id = 42")
//!         .execute(&mut *tx)
//!         .await?;
//!     tx.commit().await?;
//! } // else: a newer holder has written; drop `tx` (rolls back) and stop.
//! # Ok(()) }
//! ```
//!
//! The transaction may be on any connection to the database that holds the data: a pool
//! of the application's own, as above, or, where the data lives in the database the
//! backend coordinates in, the backend's own pool ([`PostgresBackend::pool`](crate::PostgresBackend::pool)), whatever
//! store the lock is held on:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = distsync::store::postgres::backend("postgres://app@db/app").await?;
//! let pool = backend.pool().clone();
//! let coordinator = distsync::Coordinator::new(backend);
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "accounts/42")?.lock().await?;
//! let mut tx = pool.begin().await?;
//! if distsync::store::postgres::fence::admit(&mut tx, "app.fences", "accounts/42", guard.token()).await? {
//!     // ... the write, on `tx` ...
//!     tx.commit().await?;
//! }
//! guard.unlock().await?;
//! session.close().await?;
//! # Ok(()) }
//! ```
//!
//! For a table that already has a fence column, the same rule is a condition on the
//! write itself: `UPDATE t SET …, fence = $token WHERE id = $id AND fence <= $token`,
//! refused when it updates no row.

use distsync_core::{Error, FencingToken, Result};
use sqlx::PgConnection;

use crate::connection::config::check_identifier;
use crate::error::map;
use crate::schema::quote;

/// Admits `token` for `resource` in the fence table `table` (`name` or
/// `schema.name`, ASCII letters, digits and `_`; created if absent), within the
/// caller's transaction on `conn`. `true`: admitted (the row now holds `token`);
/// `false`: a higher token was admitted before, so this writer is stale.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad table name or a token above `i64::MAX`; the
/// database's error.
///
/// # Cancel safety
/// Dropping the future part-way leaves the transaction in an unknown state: roll it
/// back.
pub async fn admit(
    conn: &mut PgConnection,
    table: &str,
    resource: &str,
    token: FencingToken,
) -> Result<bool> {
    let table = identifier(table)?;
    let token = i64::try_from(token.get()).map_err(|_| {
        Error::InvalidArgument(format!("fencing token {token} is too large for a bigint"))
    })?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (resource text PRIMARY KEY, token bigint NOT NULL)"
    ))
    .execute(&mut *conn)
    .await
    .map_err(map)?;
    let admitted: Option<i64> = sqlx::query_scalar(&format!(
        "INSERT INTO {table} (resource, token) VALUES ($1, $2) \
         ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token \
         WHERE {table}.token <= EXCLUDED.token RETURNING token"
    ))
    .bind(resource)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map)?;
    Ok(admitted.is_some())
}

/// `table` checked as `name` or `schema.name` of ASCII letters, digits and `_`, not
/// starting with a digit, and quoted.
fn identifier(table: &str) -> Result<String> {
    let parts: Vec<&str> = table.split('.').collect();
    let valid = |part: &&str| check_identifier(part).is_ok();
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(valid) {
        return Err(Error::InvalidArgument(format!(
            "fence table {table:?}: expected name or schema.name of ASCII letters, digits and _"
        )));
    }
    Ok(parts
        .iter()
        .map(|part| quote(part))
        .collect::<Vec<_>>()
        .join("."))
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(identifier("app.fences").unwrap(), "\"app\".\"fences\"");
        assert_eq!(identifier("fences").unwrap(), "\"fences\"");
        for bad in ["", "a.b.c", "1x", "x;drop", "a\"b", "a..b"] {
            assert!(identifier(bad).is_err(), "{bad}");
        }
    }
}
