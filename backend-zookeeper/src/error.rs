//! ZooKeeper's errors as distsync's.

use distsync_core::Error;
use zookeeper_client as zk;

use crate::BACKEND;

/// Maps a client error: connection trouble is [`Error::Connection`] (transient, the
/// request may or may not have been applied), an ended session [`Error::SessionLost`],
/// a refused login or ACL [`Error::Authentication`], anything else [`Error::Backend`].
pub(crate) fn map(error: zk::Error) -> Error {
    if is_connection_loss(&error) {
        return Error::connection(BACKEND, error);
    }
    match error {
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::Throttled
        | zk::Error::SessionMoved => Error::connection(BACKEND, error),
        zk::Error::SessionExpired | zk::Error::ClientClosed => Error::SessionLost,
        zk::Error::AuthFailed | zk::Error::NoAuth => {
            Error::authentication(BACKEND, error.to_string())
        }
        other => Error::backend(BACKEND, other),
    }
}

/// `result` with a missing node ([`zk::Error::NoNode`]) as `None`.
pub(crate) fn found<T>(
    result: std::result::Result<T, zk::Error>,
) -> std::result::Result<Option<T>, zk::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(error) => Err(error),
    }
}

/// How the ZooKeeper client words the connection ends it decides on itself.
const CONNECTION_ENDS: [&str; 2] = [
    "no response from connection in",
    "encounter writable server",
];

/// Whether `error` says the session is over for good.
pub(crate) fn is_session_end(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
    )
}

/// Whether `error` is a lost connection, after which a request may or may not have
/// been applied: [`zk::Error::ConnectionLoss`], or the socket's own error (a reset when
/// a server dies), which the client hands to the requests in flight as they were.
pub(crate) fn is_connection_loss(error: &zk::Error) -> bool {
    if matches!(error, zk::Error::ConnectionLoss) {
        return true;
    }
    // The client's own end of a connection it gave up on: one that answered nothing
    // (not even a ping) within its timeout, as a silent network leaves it, or a
    // read-only one left for a writable server. The client hands the requests in
    // flight this error, with no source, as it closes the connection.
    if let zk::Error::Custom(_) = error {
        let text = error.to_string();
        if CONNECTION_ENDS.iter().any(|end| text.contains(end)) {
            return true;
        }
    }
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return true;
        }
        // The client keeps a socket error as `Arc<dyn Error>`.
        if let Some(shared) =
            error.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        {
            if shared.is::<std::io::Error>() {
                return true;
            }
        }
        cause = error.source();
    }
    false
}
