//! Telling a store that could not be reached, or refused more clients, from a broken
//! guarantee.
//!
//! A case turns every error it did not expect into a violation with the error's text
//! as evidence. When the store stops answering, or refuses new connections because it
//! has too many clients (PostgreSQL's `too many clients already` and `remaining
//! connection slots are reserved`, SQLSTATE 53300; Redis's `max number of clients
//! reached`), that says nothing about the guarantee the case measures: the runner
//! reports such a case [`Outcome::Unreachable`] instead ([`crate::run_suite_in`]), and the run ends
//! with its own exit status ([`crate::ExitStatus::Unreachable`]).
//!
//! A connection error alone is not enough: the partition cases cut their own client
//! off from a store that is fine. So a violation whose evidence is a connection error
//! (or a case that did not finish) is reported unreachable only when the runner, right
//! after, cannot open and close a session on the store itself with its own client
//! ([`probe`]); refusals for too many clients are the store's own words and need no
//! probe.

use std::fmt;
use std::time::Duration;

use distsync_core::Error;

use crate::case::Report;
use crate::harness::Harness;
use crate::outcome::Outcome;

/// How long [`probe`] gives the store to open and close a session.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Why a store could not serve a case.
///
/// ```
/// use distsync_conformance::StoreTrouble;
/// use distsync_core::Error;
///
/// let full = Error::backend("postgres", "FATAL: sorry, too many clients already");
/// assert_eq!(StoreTrouble::of_error(&full), Some(StoreTrouble::Overloaded));
/// let down = Error::connection("redis", "Connection refused (os error 111)");
/// assert_eq!(StoreTrouble::of_error(&down), Some(StoreTrouble::Unreachable));
/// assert_eq!(StoreTrouble::of_error(&Error::NotHeld), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreTrouble {
    /// The store did not answer, refused the TCP connection, or the connection broke.
    Unreachable,
    /// The store answered, refusing more clients (its connection limit is reached).
    Overloaded,
}

/// What stores say when they refuse a client for having too many (compared in lower
/// case).
const OVERLOAD_WORDS: [&str; 5] = [
    // PostgreSQL, SQLSTATE 53300.
    "too many clients",
    "remaining connection slots are reserved",
    "53300",
    // Redis `maxclients`.
    "max number of clients reached",
    // MySQL-style proxies and poolers in front of a store.
    "too many connections",
];

/// What an error that means "no answer" looks like in a case's evidence (compared in
/// lower case): distsync's [`Error::Connection`] display, and the connect timeouts.
const UNREACHABLE_WORDS: [&str; 3] = [
    ": connection error: ",
    "connection refused",
    "did not answer within the connect timeout",
];

impl StoreTrouble {
    /// The trouble `error` shows, if any: a refusal for too many clients is
    /// [`StoreTrouble::Overloaded`] whatever its variant; any other
    /// [`Error::Connection`] is [`StoreTrouble::Unreachable`].
    pub fn of_error(error: &Error) -> Option<Self> {
        if has_any(&error_text(error), &OVERLOAD_WORDS) {
            return Some(Self::Overloaded);
        }
        matches!(error, Error::Connection { .. }).then_some(Self::Unreachable)
    }

    /// The trouble a case's evidence (or any message) names, if any.
    pub fn of_text(text: &str) -> Option<Self> {
        if has_any(text, &OVERLOAD_WORDS) {
            Some(Self::Overloaded)
        } else if has_any(text, &UNREACHABLE_WORDS) {
            Some(Self::Unreachable)
        } else {
            None
        }
    }

    /// `store unreachable` or `store overloaded (too many clients)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "store unreachable",
            Self::Overloaded => "store overloaded (too many clients)",
        }
    }
}

impl fmt::Display for StoreTrouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error's display and every source's, so that a database's refusal wrapped by
/// the client library is found.
fn error_text(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn has_any(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|word| text.contains(word))
}

/// Whether the store answers the runner's own client: a session opened and closed on
/// `harness`'s backend within [`PROBE_LIMIT`].
///
/// # Errors
/// The store's error, or [`Error::Connection`] when it did not answer in time.
///
/// # Cancel safety
/// Cancel-safe; a session opened by a dropped probe is revoked in the background or
/// expires.
pub async fn probe(harness: &Harness) -> Result<(), Error> {
    let backend = harness.capabilities().backend;
    let answered = tokio::time::timeout(PROBE_LIMIT, async {
        let session = harness.session().await?;
        session.close().await
    })
    .await;
    answered.unwrap_or_else(|_| {
        Err(Error::connection(
            backend,
            format!("no session opened and closed within {PROBE_LIMIT:?}"),
        ))
    })
}

/// `report` as the runner reports it: a violation or an unfinished case whose cause is
/// the store's reachability (see the module docs) becomes [`Outcome::Unreachable`];
/// every other report is returned as it is.
///
/// # Cancel safety
/// Cancel-safe (see [`probe`]).
pub(crate) async fn judge(mut report: Report, harness: &Harness) -> Report {
    // An unfinished case (its set-up lapsed: a session that did not open) is judged as
    // a violation is: a store gone is the likeliest cause of both.
    let (Outcome::Violated { evidence } | Outcome::Error { message: evidence }) = &report.outcome
    else {
        return report;
    };
    let trouble = match StoreTrouble::of_text(evidence) {
        Some(StoreTrouble::Overloaded) => Some((StoreTrouble::Overloaded, None)),
        seen if seen.is_some() || evidence.contains("did not finish within") => {
            match probe(harness).await {
                Ok(()) => None,
                Err(error) => Some((
                    StoreTrouble::of_error(&error).unwrap_or(StoreTrouble::Unreachable),
                    Some(error),
                )),
            }
        }
        _ => None,
    };
    if let Some((trouble, probed)) = trouble {
        let probed = probed
            .map(|error| format!("; the runner's own session then failed too: {error}"))
            .unwrap_or_default();
        tracing::warn!(case = report.case.id, %trouble, "a case could not reach the store");
        report.outcome = Outcome::Unreachable {
            message: format!("{trouble}: {evidence}{probed}"),
        };
    }
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use distsync_kv::memory::MemoryBackend;

    use super::*;
    use crate::cases::find;

    #[test]
    fn overload_and_unreachable_words_are_recognised() {
        for overloaded in [
            "opening a session: unexpected error: postgres: error returned from database: \
             sorry, too many clients already",
            "postgres: FATAL: remaining connection slots are reserved for roles with the \
             SUPERUSER attribute",
            "redis: ERR max number of clients reached",
        ] {
            assert_eq!(
                StoreTrouble::of_text(overloaded),
                Some(StoreTrouble::Overloaded),
                "{overloaded}"
            );
        }
        assert_eq!(
            StoreTrouble::of_text("locking: unexpected error: redis: connection error: reset"),
            Some(StoreTrouble::Unreachable)
        );
        assert_eq!(StoreTrouble::of_text("two holders at once"), None);
        let wrapped = Error::connection("postgres", "error returned from database: 53300");
        assert_eq!(
            StoreTrouble::of_error(&wrapped),
            Some(StoreTrouble::Overloaded)
        );
    }

    fn report(outcome: Outcome) -> Report {
        Report {
            backend: "memory".into(),
            case: find("lock_mutual_exclusion").unwrap(),
            declared: Some(true),
            outcome,
            elapsed: Duration::ZERO,
            tightest: None,
        }
    }

    #[tokio::test]
    async fn a_refusal_for_too_many_clients_is_not_a_violation() {
        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let judged = judge(
            report(Outcome::violated(
                "a second client: unexpected error: postgres: sorry, too many clients already",
            )),
            &harness,
        )
        .await;
        assert!(
            matches!(&judged.outcome, Outcome::Unreachable { message }
                if message.starts_with("store overloaded")),
            "{judged}"
        );
        assert!(judged.is_failure());
    }

    #[tokio::test]
    async fn a_set_up_that_lapsed_for_too_many_clients_is_not_an_error_of_the_harness() {
        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let judged = judge(
            report(Outcome::Error {
                message: "the set-up before the fault did not complete: opening session 0: \
                          unexpected error: redis: ERR max number of clients reached"
                    .into(),
            }),
            &harness,
        )
        .await;
        assert!(
            matches!(&judged.outcome, Outcome::Unreachable { message }
                if message.starts_with("store overloaded")),
            "{judged}"
        );
        let lapsed = Outcome::Error {
            message: "opening session 0: did not finish within 5s".into(),
        };
        let answered = judge(report(lapsed.clone()), &harness).await;
        assert_eq!(
            answered.outcome, lapsed,
            "the memory store answers the probe"
        );
    }

    #[tokio::test]
    async fn a_connection_error_on_a_store_that_answers_stays_a_violation() {
        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let evidence =
            "the cut-off client: unexpected error: memory: connection error: gate closed";
        let judged = judge(report(Outcome::violated(evidence)), &harness).await;
        assert_eq!(judged.outcome, Outcome::violated(evidence));
        let plain = judge(report(Outcome::violated("two holders")), &harness).await;
        assert_eq!(plain.outcome, Outcome::violated("two holders"));
    }
}
