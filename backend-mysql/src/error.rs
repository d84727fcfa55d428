//! The store's own refusals ([`StoreError`]) and the mapping of `sqlx` errors onto
//! distsync's [`Error`].

use std::time::Duration;

use distsync_core::Error;
use distsync_kv::kv::{LeaseId, Revision};

use crate::BACKEND;

/// A refusal of the MySQL store's revisioned model, carried as the source of an
/// [`Error::Backend`] with backend `"mysql"` (downcast the source to match on it).
///
/// The messages follow etcd's, so the etcd, memory and MySQL backends fail alike.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A read or watch asked for a revision older than the compaction point.
    #[error("mvcc: required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still readable.
        compacted: Revision,
    },
    /// A read asked for a revision the store has not reached yet.
    #[error("mvcc: required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A put named a lease the store does not know (never granted, revoked or expired).
    #[error("lease not found: requested lease {0:x} not found")]
    LeaseNotFound(LeaseId),
    /// A put keeping the key's lease (`ignore_lease`) named a key that does not exist.
    #[error("key not found: {0:?}")]
    KeyNotFound(String),
    /// A key or value the store cannot hold (a key not valid UTF-8 read back, a key
    /// longer than the key column).
    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::backend(BACKEND, error)
    }
}

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
}

/// The server's error number, if `error` is a database error.
pub(crate) fn number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|db| db.number()),
        _ => None,
    }
}

/// Converts a `sqlx` error: a refused login becomes [`Error::Authentication`] (the
/// server's message names the user, never the password), a lost connection, a server
/// going down and a lock wait that timed out [`Error::Connection`] (the transaction
/// rolled back; calling again may succeed), the rest [`Error::Backend`].
pub(crate) fn map(error: sqlx::Error) -> Error {
    match number(&error) {
        Some(code::ACCESS_DENIED | code::DB_ACCESS_DENIED) => {
            let message = match &error {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            };
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

/// Runs `work` within `timeout`: a statement the server does not answer in time is a
/// [`Error::Connection`] (it may have been applied, as after any lost reply).
pub(crate) async fn within<T>(
    timeout: Duration,
    doing: &str,
    work: impl std::future::Future<Output = distsync_core::Result<T>>,
) -> distsync_core::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::connection(
                BACKEND,
                format!("{doing}: no answer within {timeout:?} (`timeout=` in the URL)"),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_backend_errors_that_downcast() {
        let error: Error = StoreError::Compacted {
            requested: 3,
            compacted: 7,
        }
        .into();
        let Error::Backend { backend, source } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*backend, BACKEND);
        assert_eq!(
            source.downcast_ref::<StoreError>(),
            Some(&StoreError::Compacted {
                requested: 3,
                compacted: 7
            })
        );
    }

    #[test]
    fn lost_connections_are_transient() {
        assert!(map(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!map(sqlx::Error::RowNotFound).is_transient());
    }
}
