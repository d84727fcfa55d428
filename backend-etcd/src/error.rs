//! Mapping etcd-client errors to distsync's, and deciding which ones may be retried.

use std::error::Error as _;

use distsync_core::Error;
use tonic::Code;

pub(crate) use crate::BACKEND;

pub(crate) use distsync_core::raw::Failure;

/// What an etcd-client error says about the request that failed ([`Failure`]): no
/// connection to the chosen member could be made ([`Failure::NotSent`]), a connection
/// or availability problem after it may have reached a member
/// ([`Failure::Transient`]), or an answer ([`Failure::Permanent`]).
pub(crate) fn classify(error: &etcd_client::Error) -> Failure {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Transient
        }
        etcd_client::Error::GRpcStatus(status) => {
            let mut sources = std::iter::successors(status.source(), |&error| error.source());
            if sources.any(|error| error.is::<tonic::ConnectError>()) {
                return Failure::NotSent;
            }
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Failure::Transient,
                // A status tonic made from a local error carries that error as its
                // source; one decoded from the server's trailers has none.
                Code::Unknown if status.source().is_some() => Failure::Transient,
                _ => Failure::Permanent,
            }
        }
        // etcd-client reports a request stream that closed under it this way.
        etcd_client::Error::WatchError(_) => Failure::Transient,
        etcd_client::Error::LeaseKeepAliveError(_) if !is_lease_not_found(error) => {
            Failure::Transient
        }
        _ => Failure::Permanent,
    }
}

/// Whether etcd says the lease does not exist (expired or revoked): a keepalive
/// answered with TTL 0 (etcd-client turns that into this error), or a `NotFound`
/// status.
pub(crate) fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

/// Whether etcd refused the login: a wrong user or password (`authentication failed`),
/// or a token it no longer accepts (`invalid auth token`, `Unauthenticated`). The
/// server's message never holds the password.
pub(crate) fn is_auth_failure(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            status.code() == Code::Unauthenticated
                || message.contains("authentication failed")
                || message.contains("invalid auth token")
        }
        _ => false,
    }
}

/// A distsync error for an etcd-client error: a refused login becomes
/// [`Error::Authentication`], connection and availability problems
/// [`Error::Connection`], everything else [`Error::Backend`].
pub(crate) fn to_error(error: etcd_client::Error) -> Error {
    if is_auth_failure(&error) {
        let message = match &error {
            etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
            other => other.to_string(),
        };
        return Error::authentication(BACKEND, message);
    }
    match classify(&error) {
        Failure::NotSent | Failure::Transient => Error::connection(BACKEND, error),
        Failure::Permanent => Error::backend(BACKEND, error),
    }
}

/// An [`Error::Backend`] with a message, for answers etcd should not give.
pub(crate) fn protocol(message: impl Into<String>) -> Error {
    Error::backend(BACKEND, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let status =
            |code, message: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
        assert_eq!(
            classify(&status(Code::Unavailable, "etcdserver: leader changed")),
            Failure::Transient
        );
        assert_eq!(
            classify(&status(
                Code::InvalidArgument,
                "etcdserver: key is not provided"
            )),
            Failure::Permanent
        );
        assert_eq!(
            classify(&status(Code::Unknown, "from the server")),
            Failure::Permanent
        );
        let refused = tonic::Status::from_error(Box::new(tonic::ConnectError(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        )));
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(
            classify(&etcd_client::Error::GRpcStatus(refused)),
            Failure::NotSent
        );
    }

    /// The policy fed with this classification: how many calls, and whether the last
    /// one succeeded.
    async fn attempts(
        idempotence: distsync_core::raw::Idempotence,
        errors: Vec<etcd_client::Error>,
    ) -> (usize, bool) {
        let mut errors = errors.into_iter();
        let mut calls = 0;
        let result = distsync_core::raw::RetryPolicy::default()
            .one_shot("test", idempotence, classify, || {
                calls += 1;
                let next = errors.next();
                async move { next.map_or(Ok(()), Err) }
            })
            .await;
        (calls, result.is_ok())
    }

    #[tokio::test(start_paused = true)]
    async fn unsent_requests_are_repeated_and_maybe_sent_mutations_are_not() {
        use distsync_core::raw::Idempotence::{Idempotent, Mutation};
        let refused = || {
            etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(
                tonic::ConnectError(
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                ),
            )))
        };
        let unavailable = || {
            etcd_client::Error::GRpcStatus(tonic::Status::unavailable("etcdserver: leader changed"))
        };
        assert_eq!(
            attempts(Mutation, vec![refused(), refused()]).await,
            (3, true)
        );
        assert_eq!(attempts(Mutation, vec![unavailable()]).await, (1, false));
        assert_eq!(attempts(Idempotent, vec![unavailable()]).await, (2, true));
        let invalid = etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument("no"));
        assert_eq!(attempts(Idempotent, vec![invalid]).await, (1, false));
    }

    #[test]
    fn a_refused_login_is_an_authentication_error() {
        let refused = etcd_client::Error::GRpcStatus(tonic::Status::new(
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        let error = to_error(refused);
        assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error.to_string().contains("authentication failed"),
            "{error}"
        );
        let expired = etcd_client::Error::GRpcStatus(tonic::Status::new(
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ));
        assert!(matches!(to_error(expired), Error::Authentication { .. }));
    }

    #[test]
    fn lease_not_found_is_recognised() {
        assert!(is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("lease not found".into())
        ));
        assert!(is_lease_not_found(&etcd_client::Error::GRpcStatus(
            tonic::Status::new(Code::NotFound, "etcdserver: requested lease not found")
        )));
        assert!(!is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("channel closed".into())
        ));
        assert_eq!(
            classify(&etcd_client::Error::LeaseKeepAliveError(
                "channel closed".into()
            )),
            Failure::Transient
        );
        assert!(matches!(
            to_error(etcd_client::Error::LeaseKeepAliveError(
                "lease not found".into()
            )),
            Error::Backend { .. }
        ));
    }
}
