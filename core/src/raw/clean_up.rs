//! Clean-up work that must reach the store although nobody awaits it: the release of a
//! dropped guard, the withdrawal of a cancelled waiter, the put-back of an item whose
//! consumer went away, the forgetting of a delivered claim.
//!
//! A `Drop` cannot await, so the work runs in a task of its own. Every such work is
//! idempotent (keyed by the holder's own key, call id or revision), so it is retried
//! through transient store failures with [`RetryPolicy::idempotent_until`], for as long
//! as its bound allows: a deadline after which the store frees what is left anyway (a
//! lease or a waiter's place expires), or the end of the session whose entries the
//! store then removes itself. Work that still fails is logged with what becomes of
//! what it would have cleaned up, the one thing an operator reading the line needs.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::raw::retry::RetryPolicy;

/// One clean-up: what it is, what is left if it fails, and how long it is retried.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use distsync::store::raw::CleanUp;
///
/// let (done, was_done) = tokio::sync::oneshot::channel();
/// CleanUp::new("removing a waiter key", "its lease frees it")
///     .within(Duration::from_secs(30))
///     .spawn(|clean_up| async move {
///         // Each attempt is the store's idempotent request.
///         clean_up.retry(|| async { Ok(()) }).await?;
///         let _ = done.send(());
///         Ok(())
///     });
/// was_done.await.unwrap();
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CleanUp {
    what: &'static str,
    left: &'static str,
    subject: String,
    deadline: Option<Instant>,
    lost: Option<CancellationToken>,
}

impl CleanUp {
    /// A clean-up named `what` in logs; `left` says what becomes of its object when it
    /// fails for good (who frees it, or where it stays). Unbounded until
    /// [`within`](CleanUp::within) or [`until_lost`](CleanUp::until_lost) bound it.
    pub fn new(what: &'static str, left: &'static str) -> Self {
        Self {
            what,
            left,
            subject: String::new(),
            deadline: None,
            lost: None,
        }
    }

    /// The key, record or call it cleans up, named in its log lines.
    #[must_use]
    pub fn of(mut self, subject: impl std::fmt::Display) -> Self {
        self.subject = subject.to_string();
        self
    }

    /// Retried for at most `budget` from now: after that the store frees what is left
    /// by itself (the entry's own TTL), so retrying longer buys nothing.
    #[must_use]
    pub fn within(mut self, budget: Duration) -> Self {
        self.deadline = Some(Instant::now() + budget);
        self
    }

    /// Ends, quietly, when `lost` fires: the session whose entry it removes has ended,
    /// and the store removes the session's entries itself.
    #[must_use]
    pub fn until_lost(mut self, lost: CancellationToken) -> Self {
        self.lost = Some(lost);
        self
    }

    /// Runs `attempt`, an idempotent store request, until it succeeds, fails with an
    /// error that is not transient, or the bound ends the retries.
    ///
    /// # Errors
    /// The last error of `attempt`; [`Error::SessionLost`] when the session given to
    /// [`until_lost`](CleanUp::until_lost) ends.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the attempt in flight (an idempotent
    /// request, safe to have been applied or not).
    pub async fn retry<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        RetryPolicy::default()
            .idempotent_until(self.what, self.deadline, self.lost.as_ref(), attempt)
            .await
    }

    /// Runs the work `work` builds (from this clean-up, for its [`retry`]) in a task of
    /// its own and logs how it ended: a failure at warning level with what is left, the
    /// end of the session at debug level (the store frees the session's entries).
    /// Outside a Tokio runtime nothing runs, and that is logged the same way.
    ///
    /// [`retry`]: CleanUp::retry
    pub fn spawn<W, Fut>(self, work: W)
    where
        W: FnOnce(CleanUp) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let (what, left, of) = (self.what, self.left, self.subject.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(what, of, left, "clean-up dropped outside a Tokio runtime");
            return;
        };
        let work = work(self);
        runtime.spawn(async move {
            match work.await {
                Ok(()) => {}
                Err(Error::SessionLost) => {
                    tracing::debug!(
                        what,
                        of,
                        "clean-up ended with its session, whose entries the store frees"
                    );
                }
                Err(error) => tracing::warn!(what, of, left, %error, "clean-up failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    use super::CleanUp;
    use crate::error::{Error, Result};

    /// An attempt that fails `failures` times with `error`, then succeeds; and its count.
    fn failing(
        failures: u32,
        error: fn() -> Error,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<()>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let attempt = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures { Err(error()) } else { Ok(()) })
        };
        (calls, attempt)
    }

    fn transient() -> Error {
        Error::connection("test", "down")
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_clean_up_outlasts_a_long_outage() {
        let (calls, attempt) = failing(5_000, transient);
        let started = tokio::time::Instant::now();
        let clean_up = CleanUp::new("test", "nothing");
        clean_up.retry(attempt).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5_001);
        assert!(started.elapsed() > Duration::from_secs(3_600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_clean_up_stops_at_its_deadline_with_the_stores_error() {
        let (calls, attempt) = failing(u32::MAX, transient);
        let started = tokio::time::Instant::now();
        let clean_up = CleanUp::new("test", "nothing").within(Duration::from_secs(5));
        let error = clean_up.retry(attempt).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(started.elapsed() <= Duration::from_secs(5));
        assert!(calls.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_up_ends_with_its_session() {
        let lost = CancellationToken::new();
        let (calls, attempt) = failing(u32::MAX, transient);
        let clean_up = CleanUp::new("test", "nothing").until_lost(lost.clone());
        let retrying = tokio::spawn(async move { clean_up.retry(attempt).await });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!retrying.is_finished());
        lost.cancel();
        assert!(matches!(retrying.await.unwrap(), Err(Error::SessionLost)));
        assert!(calls.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test]
    async fn an_answer_is_not_retried() {
        let (calls, attempt) = failing(u32::MAX, || Error::NotHeld);
        let error = CleanUp::new("test", "nothing")
            .retry(attempt)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::NotHeld));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn spawned_work_runs_without_being_awaited() {
        let (done, was_done) = oneshot::channel();
        CleanUp::new("test", "nothing").spawn(|_| async move {
            let _ = done.send(());
            Ok(())
        });
        tokio::time::timeout(Duration::from_secs(30), was_done)
            .await
            .expect("the spawned clean-up ran")
            .unwrap();
    }

    #[test]
    fn outside_a_runtime_nothing_is_built_or_run() {
        let built = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&built);
        CleanUp::new("test", "nothing").spawn(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        assert_eq!(built.load(Ordering::SeqCst), 0);
    }
}
