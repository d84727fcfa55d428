//! What every command works with, the one-shot subcommands and the interactive ones alike:
//! the store, the signal handlers, and opening and closing sessions. It sits below both so
//! that `commands` and `repl` import it and not each other.

use std::future::Future;
use std::time::Duration;

use distsync::{Coordinator, Session};

use crate::args::WaitArgs;
use crate::exit::Failure;
use crate::signals::Interrupts;
use crate::wait::{race, Raced};

/// How long closing a session may take before it is left to expire.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every command works with.
pub(crate) struct Ctx {
    /// The store.
    pub coordinator: Coordinator,
    /// SIGINT and SIGTERM.
    pub interrupts: Interrupts,
    /// The TTL of the sessions to open.
    pub ttl: Duration,
    /// How long CMD gets between SIGTERM and SIGKILL when the session fails.
    pub grace: Duration,
}

impl Ctx {
    /// Runs `op` until it finishes, failing with the interrupt's exit code (130) when
    /// SIGINT or SIGTERM comes first, or with exit code 3 when `session` is lost first.
    ///
    /// # Errors
    /// As said, or `op`'s error.
    pub(crate) async fn wait<T>(
        &mut self,
        op: impl Future<Output = distsync::Result<T>>,
        session: Option<&Session>,
    ) -> Result<T, Failure> {
        match race(op, &mut self.interrupts, session).await {
            Raced::Done(output) => Ok(output?),
            Raced::Interrupted => Err(Failure::interrupted()),
            Raced::Lost => Err(Failure::session_lost("while waiting")),
        }
    }

    /// Acquires (or takes) what `blocking` waits for, as `wait` says: waiting for it,
    /// for at most `--timeout`, or (`--no-wait`) trying once with `once`. Not getting
    /// it is exit code 1, with `{what} {busy}` (`--no-wait`) or `{what}: {late} within
    /// <timeout>` as the message. `session`, when given, is watched as in
    /// [`Ctx::wait`].
    ///
    /// The timeout is the command line's own (dropping `blocking` at the deadline,
    /// which every blocking call allows: it removes its waiter's entry), so that a
    /// store that does not answer ([`distsync::Error::Connection`], also within the
    /// URL's `timeout=`) stays a store error.
    ///
    /// # Errors
    /// As said, and as [`Ctx::wait`].
    pub(crate) async fn acquire<T>(
        &mut self,
        wait: WaitArgs,
        what: &str,
        (busy, late): (&str, &str),
        blocking: impl Future<Output = distsync::Result<T>>,
        once: impl Future<Output = distsync::Result<Option<T>>>,
        session: Option<&Session>,
    ) -> Result<T, Failure> {
        let got = match (wait.no_wait, wait.timeout) {
            (true, _) => self.wait(once, session).await?,
            (false, Some(timeout)) => {
                let timed = async {
                    match tokio::time::timeout(timeout, blocking).await {
                        Ok(got) => got.map(Some),
                        Err(_elapsed) => Ok(None),
                    }
                };
                match self.wait(timed, session).await? {
                    Some(got) => Some(got),
                    None => {
                        return Err(Failure::not_now(format!(
                            "{what}: {late} within {timeout:?}"
                        )))
                    }
                }
            }
            (false, None) => Some(self.wait(blocking, session).await?),
        };
        got.ok_or_else(|| Failure::not_now(format!("{what} {busy}")))
    }

    /// Opens a session with the command line's TTL.
    ///
    /// # Errors
    /// Exit code 130 when interrupted, 2 for a TTL the backend refuses, else the
    /// store's error.
    pub(crate) async fn session(&mut self) -> Result<Session, Failure> {
        let coordinator = self.coordinator.clone();
        let ttl = self.ttl;
        self.wait(
            coordinator.session_with(distsync::SessionOptions::with_ttl(ttl)),
            None,
        )
        .await
    }
}

/// Closes `session`, waiting at most [`CLOSE_TIMEOUT`]; a failure is logged, since the
/// lease then expires by itself after its TTL.
pub(crate) async fn close(session: &Session) {
    match tokio::time::timeout(CLOSE_TIMEOUT, session.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "closing the session failed; it expires after its TTL")
        }
        Err(_) => tracing::warn!("closing the session timed out; it expires after its TTL"),
    }
}
