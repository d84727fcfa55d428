//! The one error type of distsync.

use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with distsync's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, in variants a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name breaks the rules of [`crate::Name`].
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An argument other than a name is out of range (a count of zero, a TTL below the
    /// backend's minimum, a session of another backend, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A URL could not be parsed or names an unknown scheme.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's backend exists but its cargo feature is off in this build.
    #[error("url scheme `{scheme}://` needs the cargo feature `{feature}` of distsync")]
    FeatureDisabled {
        /// The URL scheme, e.g. `etcd`.
        scheme: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// This backend does not offer the operation (see [`crate::Capabilities`]).
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The backend, e.g. `redis`.
        backend: &'static str,
        /// The primitive, level or feature asked for.
        operation: String,
    },
    /// The session (lease) behind this operation has ended: closed, revoked,
    /// expired, or its connection was lost. Everything held through it is released.
    #[error("session lost")]
    SessionLost,
    /// The lock is not (or no longer) held by this guard.
    #[error("not held")]
    NotHeld,
    /// This candidate is not (or no longer) the leader.
    #[error("not leader")]
    NotLeader,
    /// A double barrier was entered by more participants than its count.
    #[error("too many participants: double barrier {name:?} admits {count}")]
    TooManyParticipants {
        /// The barrier's name.
        name: String,
        /// Its participant count.
        count: usize,
    },
    /// An STM transaction conflicted on every attempt and
    /// [`Stm::atomically`](crate::Stm::atomically) gave up (see
    /// [`StmOptions::max_attempts`](crate::StmOptions::max_attempts)).
    #[error("stm transaction conflicted {attempts} times; gave up")]
    StmConflict {
        /// How many attempts were made.
        attempts: u32,
    },
    /// A migration found live holds (locks, leadership, ...) in its source.
    #[error(
        "the source still has {count} active holds (e.g. {example:?}); stop its clients or force"
    )]
    ActiveHolders {
        /// How many holds.
        count: usize,
        /// The store key of one of them.
        example: String,
    },
    /// A migration's verification found the destination different from what was
    /// copied (see [`crate::migrate`]).
    #[error("migration verification failed: {0}")]
    MigrationMismatch(String),
    /// The store holds state written by a newer, incompatible key layout or schema
    /// than this client understands. Not transient: upgrade the client (see the
    /// upgrade procedure in docs/MIGRATING.md). The store is left untouched.
    #[error(
        "{backend}: the store's layout version is {found}, this client understands up to \
         {supported}; upgrade distsync"
    )]
    IncompatibleLayout {
        /// The backend, e.g. `postgres`.
        backend: &'static str,
        /// The layout version recorded in the store.
        found: u32,
        /// The newest layout version this client reads and writes.
        supported: u32,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The store refused the credentials: a wrong user or password, none where one is
    /// required, or an expired or revoked login. Not transient (retrying does not
    /// help). The message is the store's reason and never contains the password.
    #[error("{backend}: authentication failed (check the user and password): {message}")]
    Authentication {
        /// The backend, e.g. `postgres`.
        backend: &'static str,
        /// The store's reason (never the password).
        message: String,
    },
    /// The store could not be reached or the connection broke.
    #[error("{backend}: connection error: {source}")]
    Connection {
        /// The backend, e.g. `etcd`.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// Any other error from the store or its client library.
    #[error("{backend}: {source}")]
    Backend {
        /// The backend, e.g. `postgres`.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A [`Error::Backend`] from anything that converts into a boxed error.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// A [`Error::Connection`] from anything that converts into a boxed error.
    pub fn connection(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Connection {
            backend,
            source: source.into(),
        }
    }

    /// An [`Error::Authentication`]; `message` must not contain the password.
    pub fn authentication(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Authentication {
            backend,
            message: message.into(),
        }
    }

    /// A [`Error::Unsupported`].
    pub fn unsupported(backend: &'static str, operation: impl Into<String>) -> Self {
        Self::Unsupported {
            backend,
            operation: operation.into(),
        }
    }

    /// Whether this is a transient store or connection error that a caller may retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection { .. } | Self::Timeout(_))
    }
}
