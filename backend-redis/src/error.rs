//! Turning the `redis` crate's errors and replies into distsync's [`Error`].

use distsync_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::capabilities::BACKEND;

/// Maps a client error: a broken, refused or timed-out connection, or a server that
/// cannot serve for now ([`unavailable`]), is [`Error::Connection`] (transient),
/// anything else [`Error::Backend`].
///
/// A refused login (wrong user or password, or none where one is required) is
/// [`Error::Authentication`] (not transient: retrying does not help). The server's
/// reply never contains the password.
pub(crate) fn redis_error(error: RedisError) -> Error {
    if auth_failed(&error) {
        return Error::authentication(BACKEND, error.to_string());
    }
    if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || unavailable(&error)
    {
        Error::connection(BACKEND, error)
    } else {
        Error::backend(BACKEND, error)
    }
}

/// Whether the server refused the login: `WRONGPASS`, `NOAUTH`, or the client's own
/// authentication error.
fn auth_failed(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// Whether the server refused for a reason that passes: loading its data after a
/// restart (`LOADING`), running a long script (`BUSY`), a replica not (yet) promoted
/// or a demoted primary (`READONLY`, `MASTERDOWN`), a cluster resharding or down
/// (`TRYAGAIN`, `CLUSTERDOWN`), or out of memory under `maxmemory` (`OOM`: writes are
/// refused until memory is freed).
fn unavailable(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
                // A Redis Cluster whose slots are moving (a failover, a resharding)
                // after the cluster client's own redirections ran out, or with no
                // connection to the node of a slot yet: retried like a lost connection.
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ) | ErrorKind::ClusterConnectionNotFound
    ) || matches!(error.code(), Some("BUSY" | "OOM"))
}

/// A reply of a shape the scripts never produce.
pub(crate) fn unexpected(what: &str, value: &Value) -> Error {
    Error::backend(BACKEND, format!("unexpected reply to {what}: {value:?}"))
}

/// An integer reply.
pub(crate) fn int(what: &str, value: &Value) -> Result<i64, Error> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| unexpected(what, value)),
        other => Err(unexpected(what, other)),
    }
}

/// An array reply.
pub(crate) fn array(what: &str, value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(what, &other)),
    }
}

/// The integer at position `i` of an array reply.
pub(crate) fn int_at(what: &str, reply: &Value, i: usize) -> Result<i64, Error> {
    match reply {
        Value::Array(fields) => int(what, fields.get(i).ok_or_else(|| unexpected(what, reply))?),
        other => Err(unexpected(what, other)),
    }
}

/// A binary string reply, `None` for nil.
pub(crate) fn bytes(what: &str, value: Value) -> Result<Option<Vec<u8>>, Error> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        other => Err(unexpected(what, &other)),
    }
}

/// A string reply.
pub(crate) fn string(what: &str, value: Value) -> Result<String, Error> {
    match bytes(what, value)? {
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::backend(BACKEND, format!("non-UTF-8 reply to {what}"))),
        None => Err(Error::backend(BACKEND, format!("nil reply to {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_typed_errors() {
        assert_eq!(int("x", &Value::Int(7)).unwrap(), 7);
        assert_eq!(int("x", &Value::BulkString(b"12".to_vec())).unwrap(), 12);
        assert!(matches!(int("x", &Value::Nil), Err(Error::Backend { .. })));
        assert!(matches!(
            array("x", Value::Int(1)),
            Err(Error::Backend { .. })
        ));
        assert_eq!(bytes("x", Value::Nil).unwrap(), None);
        assert!(matches!(
            string("x", Value::BulkString(vec![0xff])),
            Err(Error::Backend { .. })
        ));
    }

    #[test]
    fn connection_failures_are_transient() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(redis_error(refused).is_transient());
        let other = RedisError::from((redis::ErrorKind::UnexpectedReturnType, "bad"));
        assert!(!redis_error(other).is_transient());
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING"));
        assert!(redis_error(loading).is_transient());
        let denied = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "NOPERM"));
        assert!(!redis_error(denied).is_transient());
    }

    #[test]
    fn a_refused_login_says_authentication_failed() {
        let refused = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        let error = redis_error(refused);
        assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains("authentication failed"),
            "{error}"
        );
    }
}
