//! The error of a connection attempt that ends before its bound: a refused port, a
//! reset, a name that does not resolve. The store's client says what happened, and
//! the message adds the URL option that bounds connecting, so a reader learns which
//! knob governs the wait even when the failure came at once. And the check that tells
//! a refusal (nothing listens: fail at once) from a server that is not serving yet
//! (wait for it), for clients that try their servers again until a deadline.

use std::fmt;
use std::time::Duration;

use crate::error::{BoxError, Error};

/// How long a refusal may take to arrive: the reset that answers a connection attempt
/// where nothing listens comes within a round trip; a host silent for longer is not
/// refusing.
const REFUSAL_WITHIN: Duration = Duration::from_secs(1);

/// A failed connection attempt: the client's error and the `connect_timeout=` it ran
/// under. Its message is the client's, followed by the option's name and value; its
/// source is the client's error's own source, so that a report that prints the chain
/// does not repeat the client's message.
#[derive(Debug)]
struct ConnectFailure {
    connect_timeout: Duration,
    cause: BoxError,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (connecting is bounded by `connect_timeout=` in the URL, {:?}; a refusal ends it at once)",
            self.cause, self.connect_timeout
        )
    }
}

impl std::error::Error for ConnectFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// `error` as the failure of connecting under `connect_timeout`: an
/// [`Error::Connection`] gets the URL option that bounds connecting (`connect_timeout=`)
/// and its value in its message; every other error (a refused login, a bad
/// certificate file) is returned as it is. Call it on what the connect attempt itself
/// returns, not on the error of its timeout running out (which names the option
/// already).
///
/// ```
/// use std::time::Duration;
/// use distsync::Error;
/// use distsync::store::raw::name_connect_timeout;
///
/// let refused = Error::connection("etcd", "127.0.0.1:9: Connection refused");
/// let named = name_connect_timeout(refused, Duration::from_secs(60));
/// assert!(named.is_transient());
/// assert!(named.to_string().contains("`connect_timeout=`"), "{named}");
/// assert!(named.to_string().contains("Connection refused"), "{named}");
/// let login = Error::authentication("etcd", "wrong user or password");
/// assert!(matches!(name_connect_timeout(login, Duration::from_secs(60)), Error::Authentication { .. }));
/// ```
pub fn name_connect_timeout(error: Error, connect_timeout: Duration) -> Error {
    match error {
        Error::Connection { backend, source } => Error::Connection {
            backend,
            source: Box::new(ConnectFailure {
                connect_timeout,
                cause: source,
            }),
        },
        other => other,
    }
}

/// Each of `hosts`' (`host:port` each) refusal of a plain TCP connection, when every
/// one of them refuses it now (nothing listens there); `None` when any accepts, is
/// silent for a second, or fails otherwise. For a client that tries its servers again
/// until a deadline: when every server refuses, connecting fails at once, as a refused
/// port does on every store; otherwise the client's wait goes on.
///
/// # Cancel safety
/// Cancel-safe: dropping the future drops the attempts (a connection made is closed).
pub async fn refusing_hosts(hosts: &[String]) -> Option<String> {
    let attempts = hosts.iter().map(|host| async move {
        match tokio::time::timeout(
            REFUSAL_WITHIN,
            tokio::net::TcpStream::connect(host.as_str()),
        )
        .await
        {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                Some(format!("{host}: {error}"))
            }
            _ => None,
        }
    });
    let refusals: Option<Vec<String>> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .collect();
    refusals
        .filter(|refusals| !refusals.is_empty())
        .map(|refusals| refusals.join(", "))
}
