//! Mapping `sqlx` errors onto distsync's [`Error`].

use distsync_core::Error;

pub(crate) use crate::capabilities::BACKEND;

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

/// Whether `error` (a connection loss) shows a connection found dead, which opens the
/// liveness window (`crate::connection::liveness`): not a wait for a free connection that ran out
/// (many callers at once on few connections) or a closed pool, which find none dead.
fn found_dead(error: &sqlx::Error) -> bool {
    !matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// The server refused the login: SQLSTATE class 28 ("invalid authorization
/// specification": `28P01` a wrong password, `28000` no `pg_hba.conf` entry allows
/// it, e.g. a role without the required client certificate).
pub(crate) fn is_auth_failure(error: &sqlx::Error) -> bool {
    matches!(sqlstate(error), Some(code) if code.starts_with("28"))
}

/// Converts a `sqlx` error: a refused login becomes [`Error::Authentication`] (with the
/// server's message, which never holds the password), connection failures
/// [`Error::Connection`], the rest [`Error::Backend`].
pub(crate) fn map(error: sqlx::Error) -> Error {
    if is_auth_failure(&error) {
        let message = match &error {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        return Error::authentication(BACKEND, message);
    }
    if is_connection_loss(&error) {
        if found_dead(&error) {
            crate::connection::liveness::connection_failed();
        }
        Error::connection(BACKEND, error)
    } else {
        Error::backend(BACKEND, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_found_dead_opens_the_liveness_window() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_connection_loss(&io) && found_dead(&io));
        for busy in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            assert!(is_connection_loss(&busy), "{busy}");
            assert!(!found_dead(&busy), "{busy}");
        }
    }
}
