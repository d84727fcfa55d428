//! Exit codes and the failure a command ends with.
//!
//! A script tells three outcomes apart without parsing standard error: nothing to take
//! now (1, as `grep` finding nothing and `flock -n` finding the lock taken), its own
//! mistake (2, as clap and most tools), and a store or operation that failed (4). The
//! table is in `cli/README.md` and in `--help` ([`crate::args`]).

use distsync::Error;

/// Success.
pub(crate) const OK: u8 = 0;
/// Nothing to take now or in time: the queue is empty or the lock is held elsewhere
/// (`--no-wait`), or `--timeout` passed first.
pub(crate) const NOT_NOW: u8 = 1;
/// Usage or configuration error (bad arguments, URL, name; backend missing or lacking
/// the primitive).
pub(crate) const USAGE: u8 = 2;
/// The session was lost while something was held or awaited.
pub(crate) const SESSION_LOST: u8 = 3;
/// The store or the operation failed (connection or store error, a refused migration,
/// a broken STM invariant, output that could not be written).
pub(crate) const FAILED: u8 = 4;
/// CMD could not be executed (as a shell says).
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// CMD was not found (as a shell says).
pub(crate) const NOT_FOUND: u8 = 127;
/// Interrupted by SIGINT or SIGTERM, after releasing what was held.
pub(crate) const INTERRUPTED: u8 = 130;

/// What a command ends with when it does not succeed: a message for standard error and
/// the process's exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The exit code.
    pub code: u8,
    /// One line for standard error (empty: print nothing).
    pub message: String,
}

impl Failure {
    /// A usage or configuration error (exit code 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    /// Nothing to take now or in time (exit code 1).
    pub(crate) fn not_now(message: impl Into<String>) -> Self {
        Self {
            code: NOT_NOW,
            message: message.into(),
        }
    }

    /// A failed operation (exit code 4).
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            code: FAILED,
            message: message.into(),
        }
    }

    /// Interrupted by SIGINT or SIGTERM (exit code 130, nothing printed).
    pub(crate) fn interrupted() -> Self {
        Self {
            code: INTERRUPTED,
            message: String::new(),
        }
    }

    /// The session was lost (exit code 3).
    pub(crate) fn session_lost(what: &str) -> Self {
        Self {
            code: SESSION_LOST,
            message: format!("session lost {what}"),
        }
    }
}

/// The exit code for a distsync error: 2 for what the caller got wrong (name, argument,
/// URL, feature, an unsupported primitive, a value larger than the store takes), 3 for a
/// lost session, 4 otherwise (a store that does not answer, [`Error::Connection`],
/// included; [`Error::Timeout`] too: the command line enforces `--timeout` itself, as
/// exit code 1).
pub(crate) fn code_of(error: &Error) -> u8 {
    match error {
        Error::InvalidName { .. }
        | Error::InvalidArgument(_)
        | Error::InvalidUrl { .. }
        | Error::FeatureDisabled { .. }
        | Error::Unsupported { .. }
        | Error::TooLarge { .. } => USAGE,
        Error::SessionLost => SESSION_LOST,
        _ => FAILED,
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            code: code_of(&error),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_errors_are_usage_errors() {
        let invalid = distsync::Name::new("a//b").unwrap_err();
        assert_eq!(Failure::from(invalid).code, USAGE);
        assert_eq!(
            code_of(&Error::unsupported("redis", "stm at ReadCommitted")),
            USAGE
        );
        let too_large = Error::TooLarge {
            backend: "etcd",
            what: "queue item",
            size: 2,
            limit: 1,
        };
        assert_eq!(code_of(&too_large), USAGE);
        assert_eq!(code_of(&Error::SessionLost), SESSION_LOST);
        assert_eq!(code_of(&Error::NotHeld), FAILED);
        assert_eq!(
            code_of(&Error::Timeout(std::time::Duration::from_secs(1))),
            FAILED
        );
        assert_ne!(FAILED, NOT_NOW);
    }
}
