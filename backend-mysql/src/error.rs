//! The mapping of `sqlx` errors onto distsync's [`Error`]. The store's refusals of
//! the revisioned model are the contract's own ([`distsync_kv::StoreError`]).

use std::time::Duration;

use distsync_core::Error;

use crate::BACKEND;

/// MySQL's error numbers the backend tells apart.
mod code {
    /// `ER_ACCESS_DENIED_ERROR`: a refused login.
    pub(super) const ACCESS_DENIED: u16 = 1045;
    /// `ER_DBACCESS_DENIED_ERROR`: the user may not use the database.
    pub(super) const DB_ACCESS_DENIED: u16 = 1044;
    /// `ER_LOCK_WAIT_TIMEOUT`.
    pub(super) const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// `ER_LOCK_DEADLOCK`.
    pub(super) const DEADLOCK: u16 = 1213;
    /// `ER_SERVER_SHUTDOWN`.
    pub(super) const SHUTDOWN: u16 = 1053;
    /// `ER_QUERY_INTERRUPTED` (`KILL QUERY`, `max_statement_time`).
    pub(super) const INTERRUPTED: u16 = 1317;
    /// `ER_CONNECTION_KILLED`.
    pub(super) const KILLED: u16 = 1927;
    /// `ER_UNKNOWN_SYSTEM_VARIABLE`: a server without the variable (MySQL has no
    /// `idle_transaction_timeout`, nor MariaDB's semi-synchronous replication ones).
    pub(super) const UNKNOWN_VARIABLE: u16 = 1193;
    /// `ER_NO_SUCH_TABLE`.
    pub(super) const NO_SUCH_TABLE: u16 = 1146;
    /// `ER_LOCK_NOWAIT` (MySQL 8's answer to `NOWAIT` on a held row; MariaDB answers
    /// [`LOCK_WAIT_TIMEOUT`]).
    pub(super) const LOCK_NOWAIT: u16 = 3572;
}

/// Whether `error` is a locking read refused at once (`NOWAIT`) or after
/// `innodb_lock_wait_timeout`: another transaction holds the row.
pub(crate) fn is_lock_refused(error: &sqlx::Error) -> bool {
    matches!(
        number(error),
        Some(code::LOCK_NOWAIT | code::LOCK_WAIT_TIMEOUT)
    )
}

/// Whether `error` is the server's answer for a table that does not exist: the store
/// forgot (its data wiped, its tables dropped).
pub(crate) fn is_missing_table(error: &sqlx::Error) -> bool {
    number(error) == Some(code::NO_SUCH_TABLE)
}

/// Whether `error` is the server's answer for a system variable it does not have.
pub(crate) fn is_unknown_variable(error: &sqlx::Error) -> bool {
    number(error) == Some(code::UNKNOWN_VARIABLE)
}

/// The server's error number, if `error` is a database error.
fn number(error: &sqlx::Error) -> Option<u16> {
    let db = error.as_database_error()?;
    db.try_downcast_ref()
        .map(sqlx::mysql::MySqlDatabaseError::number)
}

/// Whether the server chose `error`'s statement as a deadlock's victim: it rolled the
/// statement's transaction back whole, so an autocommitted statement can run again.
pub(crate) fn deadlocked(error: &sqlx::Error) -> bool {
    number(error) == Some(code::DEADLOCK)
}

/// Converts a `sqlx` error: a refused login becomes [`Error::Authentication`] (the
/// server's message names the user, never the password), a lost connection, a server
/// going down and a lock wait that timed out [`Error::Connection`] (the transaction
/// rolled back; calling again may succeed), the rest [`Error::Backend`].
pub(crate) fn map(error: sqlx::Error) -> Error {
    match number(&error) {
        Some(code::ACCESS_DENIED | code::DB_ACCESS_DENIED) => {
            let message = (error.as_database_error())
                .map_or_else(|| error.to_string(), |db| db.message().to_owned());
            return Error::authentication(BACKEND, message);
        }
        Some(
            code::LOCK_WAIT_TIMEOUT
            | code::DEADLOCK
            | code::SHUTDOWN
            | code::INTERRUPTED
            | code::KILLED,
        ) => return Error::connection(BACKEND, error),
        _ => {}
    }
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::connection(BACKEND, error),
        error => Error::backend(BACKEND, error),
    }
}

/// An error of `sqlx` on a connection of the backend's pool, as the library reads its
/// own: for the caller's own statements in a transaction that an
/// [`Outbox`](crate::Outbox) or [`ack_in`](crate::ack_in) joins, so that a broken
/// connection reads as [`Error::Connection`] (transient: the transaction rolled back
/// with it, run it again) whichever statement met it.
pub fn database_error(error: sqlx::Error) -> Error {
    map(error)
}

/// Runs `work` within `timeout`, which the URL option `option` sets (`timeout`: one
/// request; `connect_timeout`: connecting in all): a statement the server does not
/// answer in time is a [`Error::Connection`] (it may have been applied, as after any
/// lost reply) naming that option.
pub(crate) async fn within<T>(
    timeout: Duration,
    option: &str,
    doing: &str,
    work: impl std::future::Future<Output = distsync_core::Result<T>>,
) -> distsync_core::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::connection(
                BACKEND,
                format!("{doing}: no answer within {timeout:?} (`{option}=` in the URL)"),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient() {
        assert!(map(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!map(sqlx::Error::RowNotFound).is_transient());
    }
}
