//! Mapping `sqlx` errors onto distsync's [`Error`].

use distsync_core::Error;

/// The backend's short name, as it appears in errors, logs and capabilities.
pub(crate) const BACKEND: &str = "postgres";

/// The SQLSTATE of a database error, if `error` is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// A serialization failure (40001) or a deadlock (40P01): the transaction may be retried.
pub(crate) fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(sqlstate(error).as_deref(), Some("40001" | "40P01"))
}

/// The session behind the statement has ended: `DS001`, raised by the schema's
/// `check_session`, or a foreign-key violation (23503) on a row referencing it.
pub(crate) fn is_session_gone(error: &sqlx::Error) -> bool {
    matches!(sqlstate(error).as_deref(), Some("DS001" | "23503"))
}

/// Whether `error` means the connection is unusable: an I/O or protocol failure, or the
/// server ending the backend (SQLSTATE classes 08 "connection exception" and 57
/// "operator intervention", e.g. `pg_terminate_backend`).
pub(crate) fn is_connection_loss(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => {
            matches!(sqlstate(error), Some(code) if code.starts_with("08") || code.starts_with("57"))
        }
        _ => false,
    }
}

/// Converts a `sqlx` error: connection failures become [`Error::Connection`], the rest
/// [`Error::Backend`].
pub(crate) fn map(error: sqlx::Error) -> Error {
    if is_connection_loss(&error) {
        Error::connection(BACKEND, error)
    } else {
        Error::backend(BACKEND, error)
    }
}
