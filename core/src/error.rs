//! The one error type of distsync, and what a caller does about each error.
//!
//! Every variant's documentation answers three questions in the same short form:
//!
//! - **Retry?** *as is* (the same call may succeed later), *after fixing input* (the
//!   name, argument, URL, credentials or build the caller chose), *with a new session*
//!   (the session it went through has ended), or *no* (calling again fails the same
//!   way);
//! - **May have happened?** whether the store may have applied the operation despite
//!   the error, answered *yes* whenever it cannot be ruled out;
//! - **Recovers by:** what the caller does next.
//!
//! The variant itself is the classification, so there is no second enum to keep in
//! step with it: match on it where a decision needs one variant, and use the
//! predicates ([`Error::is_transient`], [`Error::needs_new_session`],
//! [`Error::is_timeout`], [`Error::may_have_applied`]) where it needs a group. Every
//! variant's answers in one table, the predicates' groups and a service loop's
//! branching are in docs/ERRORS.md ("Branching in code"); the calls that already retry
//! internally, and for how long, are in [`crate::raw::retry`].
//!
//! A caller's own deadline passing ([`crate::timeout`]) is [`Error::Timeout`]; a store
//! that does not answer, within a backend's connect or request timeout or past a
//! caller's deadline during an outage, is [`Error::Connection`] on every backend (see
//! [`crate::raw::retry`] and [`crate::timeout`]). That is why [`Error::is_transient`]
//! excludes [`Error::Timeout`]: retrying a timed-out wait means choosing to wait
//! longer, not riding out a store failure.

use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with distsync's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, in variants a caller can act on.
///
/// Each variant says whether to retry, whether the store may have applied the
/// operation anyway, and how to recover (see the [module docs](self) for the form and
/// the predicates that group the variants).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name breaks the rules of [`crate::Name`].
    ///
    /// - **Retry?** After fixing input.
    /// - **May have happened?** No: names are checked before any request.
    /// - **Recovers by:** passing a name [`crate::Name::new`] accepts.
    #[error("invalid name {}: {reason}", bounded(name))]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An argument other than a name is out of range (a count of zero, a TTL below the
    /// backend's minimum, a session of another backend, a semaphore joined with a
    /// permit count other than the one in use, a double barrier left without entering
    /// it, ...).
    ///
    /// - **Retry?** After fixing input.
    /// - **May have happened?** No: the argument is refused before anything is
    ///   written, or the entry that found the disagreement is removed before this
    ///   returns.
    /// - **Recovers by:** calling with the argument the message names.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A URL could not be parsed or names an unknown scheme.
    ///
    /// - **Retry?** After fixing input.
    /// - **May have happened?** No: nothing is connected.
    /// - **Recovers by:** fixing the URL (the message shows it with the password
    ///   masked).
    #[error("invalid url {}: {reason}", bounded(url))]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's backend exists but its cargo feature is off in this build.
    ///
    /// - **Retry?** After fixing input (the build).
    /// - **May have happened?** No: nothing is connected.
    /// - **Recovers by:** enabling the named cargo feature of distsync and rebuilding.
    #[error("url scheme `{scheme}://` needs the cargo feature `{feature}` of distsync")]
    FeatureDisabled {
        /// The URL scheme, e.g. `etcd`.
        scheme: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// This backend does not offer the operation (see [`crate::Capabilities`]).
    ///
    /// - **Retry?** No: this backend, as configured, never offers it.
    /// - **May have happened?** No: it is refused before any request.
    /// - **Recovers by:** checking [`crate::Capabilities`] first, asking for less
    ///   (another isolation level, no TLS), or using a backend that offers it.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The backend, e.g. `redis`.
        backend: &'static str,
        /// The primitive, level or feature asked for.
        operation: String,
    },
    /// The session (lease) behind this operation has ended: closed, revoked,
    /// expired, or its connection was lost. Everything held through it is released.
    ///
    /// - **Retry?** With a new session: this one never comes back.
    /// - **May have happened?** Yes: a release or an `ack` retried through an outage
    ///   until the session ended may have been applied by an attempt whose reply was
    ///   lost, and a grant made just before the end is released with the session. The
    ///   store frees whatever the session held, so nothing it took stays taken.
    /// - **Recovers by:** opening a new session ([`crate::Coordinator::session`]) and
    ///   acquiring again; after an `unlock`, `resign` or `ack` nothing is left to
    ///   release (an item not acknowledged goes back to the queue and may be delivered
    ///   again). Work done under a hold of the lost session may have overlapped the
    ///   next holder (see the fencing token of [`crate::LockGuard::token`]).
    #[error("session lost")]
    SessionLost,
    /// The lock is not (or no longer) held by this guard: its hold ended without this
    /// guard releasing it (its session's lease expired or was revoked, or its key was
    /// deleted by someone else), or, on Redis, a double barrier is left without
    /// entering it. A release that finds the session gone says
    /// [`Error::SessionLost`] instead.
    ///
    /// - **Retry?** No: the same call on the same guard fails again.
    /// - **May have happened?** No: the store checks the hold in the same atomic step
    ///   as the write ([`crate::LockGuard::put_if_held`] wrote nothing; an `unlock`
    ///   released nothing, as the hold was already gone).
    /// - **Recovers by:** acquiring again, through a new session if
    ///   [`crate::Session::is_lost`] (the error alone does not say whether the
    ///   session ended, so [`Error::needs_new_session`] is false).
    #[error("not held")]
    NotHeld,
    /// This candidate is not (or no longer) the leader: its leadership ended without
    /// it resigning (its session's lease expired or was revoked, or its key was
    /// deleted by someone else; on PostgreSQL also when the session is found gone).
    ///
    /// - **Retry?** No: the same call on the same leadership fails again.
    /// - **May have happened?** No: the store checks the leadership in the same atomic
    ///   step as the write ([`crate::Leadership::proclaim`] published nothing; a
    ///   `resign` resigned nothing, as the leadership was already gone).
    /// - **Recovers by:** campaigning again, through a new session if
    ///   [`crate::Session::is_lost`] ([`crate::Coordinator::lead`] does both).
    #[error("not leader")]
    NotLeader,
    /// A double barrier was entered by more participants than its count.
    ///
    /// - **Retry?** No: the barrier's current round is full.
    /// - **May have happened?** No: this participant's entry is removed before this
    ///   returns.
    /// - **Recovers by:** using the same count in every participant, and no more
    ///   participants than it.
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
    ///
    /// - **Retry?** As is: other writers changed the keys it read, and may not next
    ///   time.
    /// - **May have happened?** No: no attempt committed (a commit whose reply is
    ///   lost ends the transaction with [`Error::Connection`] instead).
    /// - **Recovers by:** running the transaction again, with a higher
    ///   [`StmOptions::max_attempts`](crate::StmOptions::max_attempts) or less
    ///   contention on its keys.
    #[error("stm transaction conflicted {attempts} times; gave up")]
    StmConflict {
        /// How many attempts were made.
        attempts: u32,
    },
    /// A migration found live holds (locks, leadership, ...) in its source.
    ///
    /// - **Retry?** No, not until the holds are gone.
    /// - **May have happened?** No: the source is checked before anything is copied.
    /// - **Recovers by:** stopping the source's clients (their holds end with their
    ///   sessions) and migrating again, or migrating with `force` (see
    ///   [`crate::migrate`]).
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
    ///
    /// - **Retry?** No: migrating again appends the queues again.
    /// - **May have happened?** Yes: the copy was written to the destination, and
    ///   verification read it back different (a writer on the destination meanwhile,
    ///   or a store that lost writes).
    /// - **Recovers by:** inspecting the destination (the message names what
    ///   differs), emptying it, and migrating again with no other writer.
    #[error("migration verification failed: {0}")]
    MigrationMismatch(String),
    /// The store holds state written by a newer, incompatible key layout or schema
    /// than this client understands (see the upgrade procedure in docs/MIGRATING.md).
    ///
    /// - **Retry?** No: this client never reads that layout.
    /// - **May have happened?** No: the store is left untouched.
    /// - **Recovers by:** upgrading distsync in this client.
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
    /// A caller's value (a queue item, a candidate's value, a guarded or STM write, a
    /// group member's metadata) is larger than the store takes
    /// ([`Capabilities::max_value_size`](crate::Capabilities::max_value_size)). Checked
    /// before the request leaves the client, the same way on every store (see
    /// [`crate::Capabilities::check_value_size`]).
    ///
    /// - **Retry?** After fixing input: the same value is refused every time.
    /// - **May have happened?** No: nothing was sent.
    /// - **Recovers by:** storing a smaller value (a reference to the data kept
    ///   elsewhere, the data split or compressed), or a store with a higher limit.
    #[error("{backend}: {what} of {size} bytes is larger than the store's limit of {limit} bytes")]
    TooLarge {
        /// The backend, e.g. `etcd`.
        backend: &'static str,
        /// What the value is, e.g. `queue item`.
        what: &'static str,
        /// The value's size in bytes.
        size: usize,
        /// The largest value the store takes, in bytes.
        limit: usize,
    },
    /// The caller's deadline passed: [`crate::timeout`] gave up on a wait while the store was
    /// answering, because nobody released in time. A store that does not answer is
    /// [`Error::Connection`], never this, whichever timeout ran out.
    ///
    /// - **Retry?** As is, if waiting longer is still wanted: the store is fine.
    /// - **May have happened?** No: the dropped wait removes what it put in the store,
    ///   so nothing is taken or held. The exceptions are a double barrier's `enter`,
    ///   which keeps the participant's entry (entering again resumes with it), and
    ///   `leave`, which may have removed it (leaving again finishes).
    /// - **Recovers by:** calling again, with a longer timeout, or giving up (the
    ///   command line's "not now").
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The store refused the credentials: a wrong user or password, none where one is
    /// required, or an expired or revoked login. The message is the store's reason and
    /// never contains the password.
    ///
    /// - **Retry?** After fixing input (the credentials, or the user in the store).
    /// - **May have happened?** No: the store refused the request.
    /// - **Recovers by:** fixing the user, password or client certificate, and
    ///   connecting again.
    #[error("{backend}: authentication failed (check the user and password): {message}")]
    Authentication {
        /// The backend, e.g. `postgres`.
        backend: &'static str,
        /// The store's reason (never the password).
        message: String,
    },
    /// The store could not be reached, did not answer within the backend's connect or
    /// request timeout, could not serve for now (a leader election, a failover, a
    /// Redis `LOADING` or `READONLY`, fewer replicas than `wait_replicas`
    /// acknowledging a write), or the connection broke.
    ///
    /// - **Retry?** As is, after a pause: the only [`Error::is_transient`] variant.
    /// - **May have happened?** Yes, unless the caller knows the request was never
    ///   sent: a mutation whose reply was lost may have been applied (a counter's
    ///   `add` may have added, a `try_lock` may have taken an entry, which its session
    ///   bounds; an `enqueue` carries an idempotency key, so repeating it with
    ///   [`enqueue_once`](crate::Queue) and the same key never
    ///   duplicates). Waits, idempotent calls and releases are retried internally first
    ///   (see [`crate::raw::retry`]).
    /// - **Recovers by:** calling again after a pause; for a mutation, only when
    ///   applying it twice is harmless, else after checking the store.
    #[error("{backend}: connection error: {source}")]
    Connection {
        /// The backend, e.g. `etcd`.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// Any other error from the store or its client library (a permission the
    /// store's user lacks, an answer the client did not expect).
    ///
    /// - **Retry?** No: the store answered with an error that calling again does not
    ///   fix by itself.
    /// - **May have happened?** Yes, as far as the error says: an error raised after
    ///   the store's reply, or by a script that failed part-way, may follow a change.
    /// - **Recovers by:** reading the message (and its source) and fixing the cause,
    ///   often the store's configuration or the user's permissions.
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

    /// What makes an [`Error::InvalidUrl`] for `url`, from each reason found wrong with
    /// it: the URL is redacted once ([`crate::redact_url`]), so no password reaches the
    /// message, however many checks a parser runs.
    ///
    /// ```
    /// use distsync::Error;
    ///
    /// let invalid = Error::invalid_url("redis://app:s3cret@h/0?colour=blue");
    /// let error = invalid("unknown query parameter `colour`".to_owned());
    /// assert!(matches!(&error, Error::InvalidUrl { url, .. } if url == "redis://app:***@h/0?colour=blue"));
    /// ```
    pub fn invalid_url(url: &str) -> impl Fn(String) -> Self {
        let shown = crate::redact::redact_url(url);
        move |reason| Self::InvalidUrl {
            url: shown.clone(),
            reason,
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

    /// Whether the store could not be reached or could not answer for now
    /// ([`Error::Connection`]): retry the same call, after a pause (a mutation only when
    /// applying it twice is harmless: see [`Error::may_have_applied`]).
    ///
    /// [`Error::Timeout`] is not transient: it is the caller's own deadline passing
    /// while the store answers, and retrying it is a choice to wait longer
    /// ([`Error::is_timeout`]). Neither is [`Error::SessionLost`], which a retry on the
    /// same session never recovers ([`Error::needs_new_session`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::Error;
    ///
    /// assert!(Error::connection("example", "connection refused").is_transient());
    /// assert!(!Error::Timeout(Duration::from_secs(1)).is_transient());
    /// assert!(!Error::SessionLost.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }

    /// Whether the session behind the call has ended ([`Error::SessionLost`]): open a
    /// new session, then acquire again; the old one never comes back.
    ///
    /// [`Error::NotHeld`] and [`Error::NotLeader`] say that a hold ended, which its
    /// session's end is one cause of: this is false for them, and
    /// [`crate::Session::is_lost`] tells whether that session can still acquire.
    ///
    /// ```
    /// use distsync::Error;
    ///
    /// assert!(Error::SessionLost.needs_new_session());
    /// assert!(!Error::NotHeld.needs_new_session());
    /// ```
    pub fn needs_new_session(&self) -> bool {
        matches!(self, Self::SessionLost)
    }

    /// Whether the caller's own deadline passed ([`Error::Timeout`], from
    /// [`crate::timeout`]): the store is answering and nobody released in time. A store that does
    /// not answer is [`Error::is_transient`] instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::Error;
    ///
    /// assert!(Error::Timeout(Duration::from_millis(50)).is_timeout());
    /// assert!(!Error::connection("example", "no answer within 10s").is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether the store may have applied the failed operation anyway, so that
    /// repeating a mutation might apply it twice; true whenever that cannot be ruled
    /// out from the error. Each variant's **May have happened?** says why.
    ///
    /// True for [`Error::Connection`] (the request may have got there and its reply
    /// been lost), [`Error::Backend`] (an error after the reply cannot be ruled out),
    /// [`Error::SessionLost`] (a release retried until the session ended may have
    /// been applied; what the session held is freed either way) and
    /// [`Error::MigrationMismatch`] (the copy was written); false for every other
    /// variant, which the store refused or the client caught before sending.
    ///
    /// ```
    /// use distsync::Error;
    ///
    /// // A counter's add whose reply was lost may have added: repeating it may add twice.
    /// assert!(Error::connection("example", "connection reset").may_have_applied());
    /// let invalid = distsync::Name::new("a//b").unwrap_err();
    /// assert!(!invalid.may_have_applied());
    /// ```
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Connection { .. }
            | Self::Backend { .. }
            | Self::SessionLost
            | Self::MigrationMismatch(_) => true,
            Self::InvalidName { .. }
            | Self::InvalidArgument(_)
            | Self::InvalidUrl { .. }
            | Self::FeatureDisabled { .. }
            | Self::Unsupported { .. }
            | Self::NotHeld
            | Self::NotLeader
            | Self::TooManyParticipants { .. }
            | Self::StmConflict { .. }
            | Self::ActiveHolders { .. }
            | Self::IncompatibleLayout { .. }
            | Self::TooLarge { .. }
            | Self::Timeout(_)
            | Self::Authentication { .. } => false,
        }
    }
}

/// How many bytes of a name or URL an error's message shows.
const SHOWN: usize = 64;

/// `text` quoted as `{:?}` shows it, cut after [`SHOWN`] bytes (at a character
/// boundary) with its full size, so that a message stays one readable line whatever
/// the caller passed; the error's field keeps the whole text.
fn bounded(text: &str) -> String {
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_or_url_is_cut_in_the_message_with_its_size() {
        let name = "n".repeat(10_000);
        let error = Error::InvalidName {
            name: name.clone(),
            reason: "is longer than 255 bytes",
        };
        let text = error.to_string();
        assert!(text.len() < 150, "{text}");
        assert!(text.contains("(10000 bytes)"), "{text}");
        assert!(matches!(error, Error::InvalidName { name: ref kept, .. } if *kept == name));
        let short = Error::InvalidName {
            name: "a//b".into(),
            reason: "has an empty '/'-separated segment",
        };
        assert_eq!(
            short.to_string(),
            "invalid name \"a//b\": has an empty '/'-separated segment"
        );
        let wide = Error::InvalidUrl {
            url: format!("etcd://{}", "é".repeat(100)),
            reason: "no host".into(),
        };
        assert!(wide.to_string().contains("(207 bytes)"), "{wide}");
    }

    /// One error of every variant.
    fn one_of_each() -> Vec<Error> {
        vec![
            Error::InvalidName {
                name: "a//b".into(),
                reason: "empty segment",
            },
            Error::InvalidArgument("count 0".into()),
            Error::InvalidUrl {
                url: "etcd:/x".into(),
                reason: "no host".into(),
            },
            Error::FeatureDisabled {
                scheme: "redis".into(),
                feature: "redis",
            },
            Error::unsupported("redis", "stm at ReadCommitted"),
            Error::SessionLost,
            Error::NotHeld,
            Error::NotLeader,
            Error::TooManyParticipants {
                name: "b".into(),
                count: 2,
            },
            Error::StmConflict { attempts: 10 },
            Error::ActiveHolders {
                count: 1,
                example: "k".into(),
            },
            Error::MigrationMismatch("queue q".into()),
            Error::IncompatibleLayout {
                backend: "postgres",
                found: 9,
                supported: 1,
            },
            Error::TooLarge {
                backend: "etcd",
                what: "queue item",
                size: 1_048_577,
                limit: 1_048_576,
            },
            Error::Timeout(Duration::from_millis(50)),
            Error::authentication("etcd", "authentication failed"),
            Error::connection("etcd", "connection refused"),
            Error::backend("postgres", "permission denied"),
        ]
    }

    /// `(is_transient, needs_new_session, is_timeout, may_have_applied)` as the
    /// variant docs state them. Exhaustive, so that a new variant is classified here
    /// before it compiles.
    fn documented(error: &Error) -> (bool, bool, bool, bool) {
        match error {
            Error::Connection { .. } => (true, false, false, true),
            Error::SessionLost => (false, true, false, true),
            Error::Timeout(_) => (false, false, true, false),
            Error::Backend { .. } | Error::MigrationMismatch(_) => (false, false, false, true),
            Error::InvalidName { .. }
            | Error::InvalidArgument(_)
            | Error::InvalidUrl { .. }
            | Error::FeatureDisabled { .. }
            | Error::Unsupported { .. }
            | Error::NotHeld
            | Error::NotLeader
            | Error::TooManyParticipants { .. }
            | Error::StmConflict { .. }
            | Error::ActiveHolders { .. }
            | Error::IncompatibleLayout { .. }
            | Error::TooLarge { .. }
            | Error::Authentication { .. } => (false, false, false, false),
        }
    }

    #[test]
    fn every_variant_is_classified_as_documented() {
        let errors = one_of_each();
        let mut seen: Vec<std::mem::Discriminant<Error>> =
            errors.iter().map(std::mem::discriminant).collect();
        seen.sort_by_key(|d| format!("{d:?}"));
        seen.dedup();
        assert_eq!(seen.len(), errors.len(), "one error per variant");
        for error in &errors {
            let got = (
                error.is_transient(),
                error.needs_new_session(),
                error.is_timeout(),
                error.may_have_applied(),
            );
            assert_eq!(got, documented(error), "{error:?}");
        }
    }

    #[test]
    fn a_deadline_is_not_a_store_failure() {
        let deadline = Error::Timeout(Duration::from_secs(1));
        assert!(deadline.is_timeout());
        assert!(!deadline.is_transient());
        let silent = Error::connection("redis", "no answer within 10s");
        assert!(silent.is_transient());
        assert!(!silent.is_timeout());
    }

    #[test]
    fn each_error_calls_for_at_most_one_next_step() {
        for error in one_of_each() {
            let steps = [
                error.is_transient(),
                error.needs_new_session(),
                error.is_timeout(),
            ];
            assert!(steps.iter().filter(|&&step| step).count() <= 1, "{error:?}");
        }
    }
}
