//! Cooperative revocation: asking the holder of a lock to let it go, and the holder
//! seeing the request (Curator's `makeRevocable` and `Revoker`).
//!
//! A request is polite, unlike
//! [`Coordinator::break_lock`](crate::Coordinator::break_lock): nothing is taken away,
//! no session ends. The requester calls
//! [`Coordinator::request_release`](crate::Coordinator::request_release) (`distsync
//! revoke NAME`); the holder awaits
//! [`LockGuard::release_requested`](crate::LockGuard::release_requested), typically in a
//! `tokio::select!` with its work, and unlocks when it sees fit.
//!
//! # Semantics
//!
//! - **A request is for the current holder only**, as Curator's (which marks the
//!   holder's node): it names the hold that holds the lock when the request is made
//!   and is answered with that hold ([`ReleaseRequest`]), or `None` when nobody holds
//!   the lock, in which case nothing is recorded. A request never waits for, nor
//!   reaches, a later holder: the next grant starts with no request pending.
//! - **A request for a hold that has just ended** (released between the requester's
//!   read and its write) reaches nobody; the requester's answer still names that hold.
//! - **Several requests** for one hold are one request: the holder sees the first, and
//!   the rest change nothing.
//! - A holder sees a request made before it started watching (its first
//!   `release_requested()`), as long as the request was made for its own hold.
//!
//! # How it is carried
//!
//! On every backend with [`Capabilities::counter`](crate::Capabilities::counter) and
//! fencing tokens in its [`status`](crate::status) report (every backend but ZooKeeper:
//! memory, etcd, Redis, PostgreSQL, MySQL, NATS), the portable protocol here is used: a
//! request reads the holder's fencing token from the status report and raises the
//! counter `<lock name>/.distsync-release-request` (see [`request_counter_name`]) to
//! that token, never lowering it; a holder whose token is at most the counter's value
//! has been asked. Tokens grow with every grant, so a request for an earlier hold never
//! reaches a later one. The holder reads the counter when it starts watching and then
//! waits for it to change ([`Counter::changed`]) until its hold ends. That counter name
//! is reserved for this use.
//!
//! **Cost and delay.** A watching holder costs the store, while idle: etcd and memory,
//! one key watch; MySQL, one watch on the process's watch hub, which reads the store's
//! revision once per `poll_interval` (20 ms by default) for all of the process's
//! watches together; Redis, one channel subscription on the backend's pub/sub
//! connection; PostgreSQL, one payload on the backend's `LISTEN` connection; and on
//! each, one read per [`CHANGED_SAFETY_NET`](crate::counter::CHANGED_SAFETY_NET) (5 s),
//! the guard against a lost notification. NATS costs one ordered consumer of the
//! counter's subject on the server, and the idle heartbeats it sends the client (which
//! stand in for the safety net's reads: a consumer whose heartbeats stop is made
//! again). A request is seen as soon as its notification arrives (on MySQL, a request
//! from another process at the holder's hub's next poll, within `poll_interval`), plus
//! one read. A backend without notifications reads the counter every
//! [`CHANGED_POLL`](crate::counter::CHANGED_POLL): a request is seen within that
//! interval, plus one read.
//!
//! ZooKeeper uses Curator's own protocol instead: the request writes `__REVOKE__` into
//! the holder's node and the holder watches its node's data, so a Java `Revoker` asks a
//! Rust holder and a Rust request asks a Java holder made revocable; it is seen as soon
//! as the watch fires.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::counter::Counter;
use crate::error::{Error, Result};
use crate::guard::ReleaseRequestWatchFn;
use crate::name::Name;
use crate::status::{LineKind, StatusReport};
use crate::token::FencingToken;

/// How long a holder watching for release requests through the portable protocol
/// pauses after a failed read of its lock's request counter before it reads again.
/// Otherwise it waits for the counter to change
/// ([`Counter::changed`]); on a backend without notifications
/// that reads every [`CHANGED_POLL`](crate::counter::CHANGED_POLL), the same interval.
pub const RELEASE_REQUEST_POLL: Duration = Duration::from_millis(250);

/// How many compare-and-set rounds a request makes before giving up; each lost round
/// means another requester raised the counter meanwhile, so a few always suffice.
const MAX_RAISES: usize = 32;

/// The last segment of a lock's request counter's name (see [`request_counter_name`]):
/// under the lock's own name, so a prefix's `status`, count and purge (a conformance
/// run's clean-up included) take the counter with the lock.
/// [`Coordinator::counter`](crate::Coordinator::counter) refuses names ending in it.
pub const REQUEST_SEGMENT: &str = ".distsync-release-request";

/// The hold a release request was made for: the holder of the lock when the request
/// was made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseRequest {
    /// The lock's name.
    pub name: String,
    /// The store key (or node) of the hold, as the holder's guard `key()` shows it.
    pub key: String,
    /// The fencing token of the hold, where the store records it.
    pub token: Option<FencingToken>,
}

impl ReleaseRequest {
    /// A request made for the hold at `key` of the lock `name`. For backends.
    pub fn new(name: &Name, key: impl Into<String>, token: Option<FencingToken>) -> Self {
        Self {
            name: name.as_str().to_owned(),
            key: key.into(),
            token,
        }
    }
}

impl fmt::Display for ReleaseRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hold {}", self.name, self.key)?;
        if let Some(token) = self.token {
            write!(f, ", token {}", token.0)?;
        }
        f.write_str(")")
    }
}

/// Whether `name` is a request counter's (see [`REQUEST_SEGMENT`]).
pub(crate) fn is_reserved(name: &str) -> bool {
    crate::name::ends_in_segment(name, REQUEST_SEGMENT)
}

/// The name of the counter that carries release requests for the lock `name` in the
/// portable protocol: `<name>/`[`REQUEST_SEGMENT`].
///
/// # Errors
/// [`Error::InvalidName`] when `name` is too long to take the segment.
pub fn request_counter_name(name: &Name) -> Result<Name> {
    name.child(
        REQUEST_SEGMENT,
        "is too long to take release requests (its request counter's name adds 26 bytes)",
    )
}

/// The portable request: finds the holder of the lock `name` in `report` and raises
/// `counter` (the lock's [`request_counter_name`]) to its fencing token. For backends:
/// [`Backend::request_release`](crate::Backend::request_release)'s default.
///
/// # Errors
/// [`Error::Unsupported`] when the report records no token for the holder; the
/// store's error (a raise that fails ambiguously may have been applied, which is
/// harmless: requests are idempotent).
///
/// # Cancel safety
/// Dropped part-way, the request was made or it was not.
pub async fn request_by_counter(
    report: &StatusReport,
    name: &Name,
    counter: &dyn Counter,
) -> Result<Option<ReleaseRequest>> {
    let Some(hold) = report
        .line(LineKind::Lock, name.as_str())
        .and_then(|line| line.holders.first())
    else {
        return Ok(None);
    };
    let Some(token) = hold.token else {
        return Err(Error::unsupported(
            report.backend,
            "release requests (the store does not record the holder's fencing token)",
        ));
    };
    let target = token.counter_value(report.backend, "release requests for a fencing token")?;
    for _ in 0..MAX_RAISES {
        let current = counter.get().await?;
        if current >= target || counter.compare_and_set(current, target).await? {
            let request = ReleaseRequest::new(name, hold.key.clone(), Some(token));
            return Ok(Some(request));
        }
    }
    Err(Error::backend(
        report.backend,
        format!(
            "release request for {:?}: the request counter kept changing",
            name.as_str()
        ),
    ))
}

/// The portable holder's watch for the hold granted with `token`: reads `counter`
/// now, then waits for it to change ([`Counter::changed`]), in a task, until the
/// counter reaches the token (a request: it cancels the requested token) or the hold
/// ends.
pub fn counter_watch(counter: Arc<dyn Counter>, token: FencingToken) -> ReleaseRequestWatchFn {
    Box::new(
        move |requested: CancellationToken, ended: CancellationToken| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(
                    counter = %counter.name(),
                    "release requests are not watched outside a tokio runtime"
                );
                return;
            };
            runtime.spawn(poll_counter(counter, token, requested, ended));
        },
    )
}

/// The loop behind [`counter_watch`].
async fn poll_counter(
    counter: Arc<dyn Counter>,
    token: FencingToken,
    requested: CancellationToken,
    ended: CancellationToken,
) {
    // A token above the counter's range can never be asked for (requests refuse it).
    let Ok(target) = i64::try_from(token.0) else {
        return;
    };
    // The value last read: the next read waits for the counter to differ from it.
    let mut seen = None;
    loop {
        let read = tokio::select! {
            () = ended.cancelled() => return,
            read = async {
                match seen {
                    None => counter.get().await,
                    Some(seen) => counter.changed(seen).await,
                }
            } => read,
        };
        match read {
            Ok(value) if value >= target => {
                tracing::info!(counter = %counter.name(), token = token.0, "release requested");
                requested.cancel();
                return;
            }
            Ok(value) => seen = Some(value),
            Err(error) => {
                tracing::debug!(
                    counter = %counter.name(),
                    %error,
                    "could not read the release request counter"
                );
                seen = None;
                tokio::select! {
                    () = ended.cancelled() => return,
                    () = tokio::time::sleep(RELEASE_REQUEST_POLL) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_name_is_prefixed_and_checked() {
        let name = Name::new("jobs/nightly").unwrap();
        assert_eq!(
            request_counter_name(&name).unwrap().as_str(),
            "jobs/nightly/.distsync-release-request"
        );
        assert!(is_reserved("jobs/nightly/.distsync-release-request"));
        assert!(!is_reserved("jobs/nightly.distsync-release-request"));
        let long = Name::new("x".repeat(250)).unwrap();
        assert!(matches!(
            request_counter_name(&long),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn huge_tokens_are_a_typed_error() {
        assert_eq!(
            FencingToken(7)
                .counter_value("memory", "release requests for a fencing token")
                .unwrap(),
            7
        );
        assert!(matches!(
            FencingToken(u64::MAX).counter_value("memory", "release requests for a fencing token"),
            Err(Error::Unsupported { .. })
        ));
    }
}
