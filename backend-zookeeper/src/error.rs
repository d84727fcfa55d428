//! ZooKeeper's errors as distsync's.

use distsync_core::Error;
use zookeeper_client as zk;

use crate::BACKEND;

/// Maps a client error: connection trouble is [`Error::Connection`] (transient, the
/// request may or may not have been applied), an ended session [`Error::SessionLost`],
/// a refused login or ACL [`Error::Authentication`], anything else [`Error::Backend`].
pub(crate) fn map(error: zk::Error) -> Error {
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

/// Whether `error` says the session is over for good.
pub(crate) fn is_session_end(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
    )
}
