//! The one retry policy of every backend: what is retried after a transient store
//! failure, for how long, and what the caller gets when the retries stop.
//!
//! A backend classifies its client library's errors ([`Failure`]: surely not sent,
//! transient, or an answer) and says which kind of call it makes; the rest is decided
//! here, identically on every backend. There are three kinds of call.
//!
//! **Waits** (`lock`, `acquire`, `read`/`write`, `campaign`, `observe`, `dequeue`,
//! `receive`, a barrier's `wait`, `enter`/`leave`, and the waiting loops inside them)
//! retry transient store failures with exponential backoff, the pauses growing from
//! 10 ms to at most 1 s, for as long as the caller waits. There is no hidden give-up:
//! a consumer waiting in `dequeue` survives an outage of any length, as a task waiting
//! in `recv().await` survives a quiet channel, and receives what is enqueued once the
//! store is back. A wait held through a session ends when that session is lost (with
//! [`Error::SessionLost`], as the session's holds are released anyway); a caller that
//! wants a bound gives one: [`crate::timeout`] (or any `tokio::time::timeout`) drops the
//! wait, which is cancel-safe. When a [`crate::timeout`] deadline passes while the
//! store is failing, the caller gets the
//! store's transient error (an [`Error::Connection`]), not [`Error::Timeout`], so that
//! "the store is down" and "nobody released in time" stay apart. An outage is logged
//! once as a warning when it starts (what was waiting, and the error) and once at info
//! level when the store answers again; errors carry no secrets, and neither do these
//! lines. ([`RetryPolicy::wait_until`] is the waiting loop of a blocking call, written
//! once for every backend: a look at the store, then the wait for the change it names;
//! [`RetryPolicy::wait`] the loop for a single store call; and [`WaitRetry`] the state
//! of a loop that must be written by hand.)
//!
//! **One-shot calls** (`try_lock`, `try_dequeue`, `enqueue`, `len`, `leader`,
//! `status`, a session's grant, ...) retry within a short budget (3 s by default, cut
//! to a backend's request timeout where it has one) only what is safe to repeat: a
//! request that surely was not sent ([`Failure::NotSent`]), or an idempotent request
//! ([`Idempotence::Idempotent`]: reads, lease renewals and revokes, calls keyed by a
//! call id). A mutation that may have been applied ([`Failure::Transient`] on an
//! [`Idempotence::Mutation`]) is not repeated: its transient error is returned at once,
//! and the caller, who knows whether repeating it is harmless, decides. Answers from
//! the store ([`Failure::Permanent`]) are never retried. ([`RetryPolicy::one_shot`].)
//!
//! **Releases** (`unlock`, `resign`, a delivery's `ack`/`nack`, a put-back, a double
//! barrier's cleanup) are idempotent by construction (a compare on the holder's own
//! key or call id), so every transient failure is retried, within the budget; a
//! release of something held through a session is retried until that session ends
//! instead, as the store then frees what the session held without the client's help
//! ([`Error::SessionLost`]). A release that still fails returns the store's transient
//! error. ([`RetryPolicy::release`]; background clean-ups that keep durable state
//! consistent run [`RetryPolicy::idempotent_until`] with their own, documented,
//! deadlines.)
//!
//! The pauses come from [`Backoff`], a plain counter: the `backon` crate (already in
//! the dependency tree through redis-rs) offers the same exponential schedule and a
//! closure-driven `retry()`, but the waits here are hand-written loops that race the
//! store's notifications, the session's loss and the caller's deadline, and need a
//! schedule they can reset after a success and peek at before a deadline; neither fits
//! `backon`'s iterator-and-closure shape, and a dependency in core is one every backend,
//! in or out of this workspace, compiles.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::raw::locked;

/// The pause after the first transient failure.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause between two attempts.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// How long a one-shot call or a release is retried by default: a few etcd election
/// timeouts, so that a leader change or a reconnect is ridden out, and short enough
/// that a caller of a `try_*` call learns of an outage quickly.
pub const ONE_SHOT_BUDGET: Duration = Duration::from_secs(3);

/// What a failed request says about itself, as a backend classifies its client
/// library's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request never left the client (no connection could be made): repeating it
    /// is safe whatever it does.
    NotSent,
    /// A connection or availability problem after the request may have reached the
    /// store: repeating it is safe for idempotent requests only.
    Transient,
    /// The store answered with an error: repeating it does not help.
    Permanent,
}

impl Failure {
    /// The classification of a distsync error: [`Failure::Transient`] when
    /// [`Error::is_transient`], else [`Failure::Permanent`] (whether it was sent is
    /// not known from a distsync error).
    pub fn of(error: &Error) -> Self {
        if error.is_transient() {
            Self::Transient
        } else {
            Self::Permanent
        }
    }
}

/// Whether a request may be repeated after it may have reached the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotence {
    /// Repeating it is harmless (a read, a renewal, a revoke, a call keyed by its id).
    Idempotent,
    /// It may change the store: repeated only when it was surely not sent.
    Mutation,
}

/// The retry policy (see the [module docs](self)): the one-shot budget and the pause
/// schedule. `Default` is the policy every backend uses; a backend with a request
/// timeout shorter than the budget cuts the budget to it
/// ([`with_budget`](RetryPolicy::with_budget)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    budget: Duration,
    first_pause: Duration,
    longest_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: ONE_SHOT_BUDGET,
            first_pause: FIRST_PAUSE,
            longest_pause: LONGEST_PAUSE,
        }
    }
}

impl RetryPolicy {
    /// The same policy with a one-shot budget of `budget`: no new attempt of a
    /// one-shot call or a release starts later than `budget` after its first (zero:
    /// one attempt, plus the retries of requests surely not sent that the first
    /// pause allows).
    #[must_use]
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The default policy for a store client whose requests time out after
    /// `request_timeout`: its one-shot budget is cut to that timeout where shorter, so
    /// that a one-shot call into a silent store fails within about one timeout (plus
    /// its last attempt's), not a budget of several.
    #[must_use]
    pub fn within(request_timeout: Duration) -> Self {
        Self::default().with_budget(ONE_SHOT_BUDGET.min(request_timeout))
    }

    /// The same policy with pauses from `first` doubling up to `longest`.
    #[must_use]
    pub fn with_pauses(mut self, first: Duration, longest: Duration) -> Self {
        self.first_pause = first;
        self.longest_pause = longest;
        self
    }

    /// The one-shot budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// A fresh pause schedule of this policy.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.first_pause, self.longest_pause)
    }

    /// A one-shot call: runs `call` until it succeeds, fails in a way that may not be
    /// retried (`classify` says [`Failure::Permanent`], or [`Failure::Transient`] for
    /// an [`Idempotence::Mutation`]), or the next attempt would start after the
    /// budget; returns the last error then. `what` names the call in debug logs.
    ///
    /// # Errors
    /// The last error of `call`.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the attempt in flight (which, like any
    /// request whose reply is lost, may have been applied).
    pub async fn one_shot<T, E, F, Fut, C>(
        self,
        what: &'static str,
        idempotence: Idempotence,
        classify: C,
        mut call: F,
    ) -> std::result::Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        C: Fn(&E) -> Failure,
        E: std::fmt::Display,
    {
        let deadline = Instant::now() + self.budget;
        let mut backoff = self.backoff();
        let mut attempt = 1u32;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retryable = match classify(&error) {
                Failure::NotSent => true,
                Failure::Transient => idempotence == Idempotence::Idempotent,
                Failure::Permanent => false,
            };
            if !retryable || Instant::now() + backoff.peek() > deadline {
                return Err(error);
            }
            tracing::debug!(what, attempt, %error, "retrying");
            tokio::time::sleep(backoff.next_pause()).await;
            attempt += 1;
        }
    }

    /// A release: runs the idempotent `call` through transient failures within the
    /// budget, or, when `session_lost` is given (the release of a hold through a
    /// session), until that session is lost.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when `session_lost` fires while the release is failing
    /// (the store frees the hold with the session); the last error of `call` when it
    /// is not transient or the budget is spent.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the attempt in flight.
    pub async fn release<T, F, Fut>(
        self,
        what: &'static str,
        session_lost: Option<&CancellationToken>,
        call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = session_lost.is_none().then(|| Instant::now() + self.budget);
        self.idempotent_until(what, deadline, session_lost, call)
            .await
    }

    /// Runs the idempotent `call` until it succeeds or fails with an error that is not
    /// transient, pausing after each transient failure; gives up with the last error
    /// once the next attempt would start after `deadline` (if any), and with
    /// [`Error::SessionLost`] when `lost` fires while it is failing. The building block
    /// of [`release`](RetryPolicy::release) and [`wait`](RetryPolicy::wait), and of
    /// background clean-ups with a deadline of their own.
    ///
    /// # Errors
    /// As said above.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the attempt in flight.
    pub async fn idempotent_until<T, F, Fut>(
        self,
        what: &'static str,
        deadline: Option<Instant>,
        lost: Option<&CancellationToken>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retry = WaitRetry::with_policy(what, &self);
        // Only a wait reports its outage to the caller's deadline.
        retry.report = deadline.is_none();
        loop {
            let error = match call().await {
                Ok(value) => {
                    retry.succeeded();
                    return Ok(value);
                }
                Err(error) if error.is_transient() => error,
                Err(error) => return Err(error),
            };
            if lost.is_some_and(CancellationToken::is_cancelled) {
                return Err(Error::SessionLost);
            }
            if deadline.is_some_and(|deadline| Instant::now() + retry.pauses.peek() > deadline) {
                return Err(error);
            }
            pause_unless_lost(retry.failed(&error).unwrap_or_default(), lost).await?;
        }
    }

    /// A waiting call's single store request (a read, a watch's creation: idempotent):
    /// runs `call` through transient failures for as long as the caller waits, until
    /// it succeeds, fails with an error that is not transient, or `lost` fires.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when `lost` fires; the error of `call` when it is not
    /// transient.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the attempt in flight, which is how a
    /// caller bounds the wait.
    pub async fn wait<T, F, Fut>(
        self,
        what: &'static str,
        lost: Option<&CancellationToken>,
        call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.idempotent_until(what, None, lost, call).await
    }

    /// The waiting loop of a blocking call: runs `look` (one look at the store, which
    /// answers at once) until it answers [`Look::Ready`], riding out its transient
    /// failures as [`wait`](RetryPolicy::wait) does. A look that answers
    /// [`Look::NotYet`] names the change to wait for (a watch from the revision it
    /// read, a notification): the loop counts the store's answer as a success first
    /// (so a [`crate::timeout`] deadline that passes during that wait is
    /// [`Error::Timeout`], not the error of an outage that has ended), then waits for
    /// the change and looks again. A wait for a change that fails with a transient
    /// error pauses as a look does before the next look, so a watch refused at once
    /// does not turn the wait into a loop of reads.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use distsync::store::raw::retry::{Look, RetryPolicy};
    /// use distsync::Error;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let looks = AtomicU32::new(0);
    /// let item = RetryPolicy::default()
    ///     .wait_until("an item", None, || async {
    ///         Ok(match looks.fetch_add(1, Ordering::SeqCst) {
    ///             0 => return Err(Error::connection("example", "connection refused")),
    ///             1 => Look::NotYet(async { Ok(()) }), // the change it waits for
    ///             _ => Look::Ready("item"),
    ///         })
    ///     })
    ///     .await?;
    /// assert_eq!((item, looks.load(Ordering::SeqCst)), ("item", 3));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::SessionLost`] when `lost` fires while the store is failing; the error
    /// of `look`, or of the wait for a change, when it is not transient.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the look or the wait in flight, which is
    /// how a caller bounds the wait.
    pub async fn wait_until<T, C, W, F, Fut>(
        self,
        what: &'static str,
        lost: Option<&CancellationToken>,
        mut look: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Look<T, W>>>,
        W: Future<Output = Result<C>>,
    {
        let mut changes = WaitRetry::with_policy(what, &self);
        loop {
            let change = match self.wait(what, lost, &mut look).await? {
                Look::Ready(value) => return Ok(value),
                Look::NotYet(change) => change,
            };
            match change.await {
                Ok(_) => changes.succeeded(),
                Err(error) => {
                    pause_unless_lost(changes.failed(&error).ok_or(error)?, lost).await?;
                }
            }
        }
    }

    /// The waiting loop of a blocking call woken by a store's notifications:
    /// [`wait_until`](RetryPolicy::wait_until) with `subscription` (made before the
    /// first look, so that a change after it is never missed) as the change it waits
    /// for. A look that answers [`Look::NotYet`] names how long to wait at most without
    /// a wake-up (`None`: no bound, `Some(Duration::ZERO)`: look again at once); the next
    /// look is handed the wake-up that ended the wait (`None` for the first look and
    /// after a re-check). `lost` ends the wait with [`Error::SessionLost`].
    ///
    /// # Errors
    /// [`Error::SessionLost`] when `lost` fires; the error of a look, or of the
    /// subscription, when it is not transient.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the look or the wait in flight, and the
    /// subscription with them.
    pub async fn wait_woken<T, S, F, Fut>(
        self,
        what: &'static str,
        lost: Option<&CancellationToken>,
        subscription: S,
        mut look: F,
    ) -> Result<T>
    where
        S: Wakes,
        F: FnMut(Option<S::Wake>) -> Fut,
        Fut: Future<Output = Result<Look<T, Option<Duration>>>>,
    {
        // Shared by the waits the loop makes in turn, one at a time.
        let subscription = tokio::sync::Mutex::new(subscription);
        let woke = std::sync::Mutex::new(None);
        let taken = || locked(&woke).take();
        self.wait_until(what, lost, || {
            let looking = look(taken());
            let (subscription, woke) = (&subscription, &woke);
            async move {
                Ok(match looking.await? {
                    Look::Ready(value) => Look::Ready(value),
                    Look::NotYet(recheck) => Look::NotYet(async move {
                        // Look again at once: no timer tick, no wake-up taken.
                        if recheck == Some(Duration::ZERO) {
                            return Ok(());
                        }
                        let mut subscription = subscription.lock().await;
                        let sleep = async {
                            match recheck {
                                Some(recheck) => tokio::time::sleep(recheck).await,
                                None => std::future::pending().await,
                            }
                        };
                        let wake = tokio::select! {
                            wake = subscription.next_wake() => Some(wake?),
                            () = sleep => None,
                            () = cancelled(lost) => return Err(Error::SessionLost),
                        };
                        *locked(woke) = wake;
                        Ok(())
                    }),
                })
            }
        })
        .await
    }
}

/// A store's subscription to its notifications, as
/// [`RetryPolicy::wait_woken`] waits on it.
pub trait Wakes: Send {
    /// What a wake-up tells the next look.
    type Wake: Send;

    /// The next wake-up.
    ///
    /// # Errors
    /// The subscription's error (the store's listener has stopped).
    ///
    /// # Cancel safety
    /// Must be cancel-safe: a wake-up is never lost by dropping the future.
    fn next_wake(&mut self) -> impl Future<Output = Result<Self::Wake>> + Send;
}

/// Sleeps `pause`, or ends it with [`Error::SessionLost`] when `lost` fires first.
///
/// Cancel safety: cancel-safe, a sleep.
async fn pause_unless_lost(pause: Duration, lost: Option<&CancellationToken>) -> Result<()> {
    tokio::select! {
        () = cancelled(lost) => Err(Error::SessionLost),
        () = tokio::time::sleep(pause) => Ok(()),
    }
}

/// Resolves when `lost` fires; never without one.
async fn cancelled(lost: Option<&CancellationToken>) {
    match lost {
        Some(lost) => lost.cancelled().await,
        None => std::future::pending().await,
    }
}

/// What one look of [`RetryPolicy::wait_until`] found: what the caller waits for, or
/// the change to wait for before the next look.
#[derive(Debug)]
pub enum Look<T, W> {
    /// The wait is over, with this value.
    Ready(T),
    /// Not yet: wait for this change (a future that ends when it happened, or fails),
    /// then look again.
    NotYet(W),
}

/// The retry state of one waiting loop (see the [module docs](self)): the pause
/// schedule, and whether the store is failing, so that an outage is logged once when
/// it starts and once when it ends, and a [`crate::timeout`] deadline that passes during it
/// returns the store's error.
///
/// ```
/// use distsync::store::raw::retry::WaitRetry;
/// use distsync::Error;
///
/// let mut retry = WaitRetry::new("dequeue");
/// let down = Error::connection("example", "connection refused");
/// assert!(retry.failed(&down).is_some()); // pause, then try again
/// assert!(retry.failed(&Error::NotHeld).is_none()); // not transient: return it
/// retry.succeeded();
/// ```
#[derive(Debug)]
pub struct WaitRetry {
    what: &'static str,
    pauses: Backoff,
    failing: bool,
    report: bool,
}

impl WaitRetry {
    /// The state of a waiting loop named `what` (in log lines), with the default
    /// policy's pauses.
    pub fn new(what: &'static str) -> Self {
        Self::with_policy(what, &RetryPolicy::default())
    }

    /// As [`new`](WaitRetry::new), with `policy`'s pauses.
    pub fn with_policy(what: &'static str, policy: &RetryPolicy) -> Self {
        Self {
            what,
            pauses: policy.backoff(),
            failing: false,
            report: true,
        }
    }

    /// Whether `error` is worth waiting out: a transient store error.
    pub fn retryable(error: &Error) -> bool {
        error.is_transient()
    }

    /// After `error`: the pause before the next try, or `None` when the error is not
    /// transient (the wait returns it). A wait never gives up on a transient error by
    /// itself: the caller's deadline, its session's loss or its cancellation ends it.
    pub fn failed(&mut self, error: &Error) -> Option<Duration> {
        if !error.is_transient() {
            return None;
        }
        if !self.failing {
            tracing::warn!(waiting_for = self.what, %error, "store unreachable; waiting for it to come back");
            self.failing = true;
        } else {
            tracing::debug!(waiting_for = self.what, %error, "store still unreachable");
        }
        if self.report {
            report(Some(copy_transient(error)));
        }
        Some(self.pauses.next_pause())
    }

    /// Sleeps the pause that follows `error`, a transient error (see
    /// [`failed`](WaitRetry::failed); for any other error it returns at once).
    ///
    /// # Cancel safety
    /// Cancel-safe: a sleep.
    pub async fn pause(&mut self, error: &Error) {
        if let Some(pause) = self.failed(error) {
            tokio::time::sleep(pause).await;
        }
    }

    /// The store answered: an outage in progress is over (logged at info level), and
    /// the next failure starts from the first pause.
    pub fn succeeded(&mut self) {
        if self.failing {
            tracing::info!(waiting_for = self.what, "store reachable again");
            self.failing = false;
            if self.report {
                report(None);
            }
        }
        self.pauses.reset();
    }

    /// Whether the last store request of this wait failed.
    pub fn is_failing(&self) -> bool {
        self.failing
    }
}

tokio::task_local! {
    /// The transient error of the outage a wait under [`crate::timeout`] is riding out.
    static OUTAGE: RefCell<Option<Error>>;
}

/// A copy of a transient error (an [`Error`] is not `Clone`: its source is boxed).
fn copy_transient(error: &Error) -> Error {
    match error {
        Error::Connection { backend, source } => Error::connection(backend, source.to_string()),
        other => Error::connection("store", other.to_string()),
    }
}

/// Records the outage a wait under [`crate::timeout`] is riding out (`None`: it ended).
fn report(outage: Option<Error>) {
    let _ = OUTAGE.try_with(|current| *current.borrow_mut() = outage);
}

/// Runs `call` for at most `timeout`. At the deadline `call` is dropped, and the result
/// is the transient error of the outage a wait in `call` is riding out, or
/// [`Error::Timeout`] when the store is answering.
pub(crate) async fn with_deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    OUTAGE
        .scope(RefCell::new(None), async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(OUTAGE
                    .with(|outage| outage.borrow_mut().take())
                    .unwrap_or(Error::Timeout(timeout))),
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn down() -> Error {
        Error::connection("test", "connection refused")
    }

    /// A call that fails with `error()` until `healed`, then answers `Ok(calls)`.
    fn failing_until(
        healed: Instant,
        calls: &AtomicU32,
        error: fn() -> Error,
    ) -> impl FnMut() -> futures::future::Ready<Result<u32>> + '_ {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            futures::future::ready(if Instant::now() >= healed {
                Ok(n)
            } else {
                Err(error())
            })
        }
    }

    #[test]
    fn a_request_timeout_shorter_than_the_budget_cuts_it() {
        let second = Duration::from_secs(1);
        assert_eq!(RetryPolicy::within(second).budget(), second);
        let long = Duration::from_secs(30);
        assert_eq!(RetryPolicy::within(long).budget(), ONE_SHOT_BUDGET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_does_not_give_up_during_a_long_outage() {
        let started = Instant::now();
        let healed = started + Duration::from_secs(120);
        let calls = AtomicU32::new(0);
        let answer = RetryPolicy::default()
            .wait("test", None, failing_until(healed, &calls, down))
            .await
            .expect("the wait outlives the outage");
        assert!(Instant::now() >= healed);
        // Pauses are capped at 1 s, so the store's return is noticed within it.
        assert!(Instant::now() <= healed + LONGEST_PAUSE);
        assert!(answer > 120, "only {answer} attempts in 120 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_with_session_lost_and_with_other_errors() {
        let lost = CancellationToken::new();
        let firing = lost.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(40)).await;
            firing.cancel();
        });
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(3600);
        let result = RetryPolicy::default()
            .wait("test", Some(&lost), failing_until(far, &calls, down))
            .await;
        assert!(matches!(result, Err(Error::SessionLost)), "{result:?}");

        let result = RetryPolicy::default()
            .wait("test", None, || async { Err::<(), _>(Error::NotHeld) })
            .await;
        assert!(matches!(result, Err(Error::NotHeld)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_during_an_outage_returns_the_store_error() {
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(3600);
        let policy = RetryPolicy::default();
        let result = with_deadline(
            Duration::from_secs(45),
            policy.wait("test", None, failing_until(far, &calls, down)),
        )
        .await;
        match result {
            Err(error @ Error::Connection { .. }) => {
                assert!(error.to_string().contains("connection refused"), "{error}");
            }
            other => panic!("expected the store's error, got {other:?}"),
        }

        // The store answers, and nobody releases: a plain timeout.
        let quiet = with_deadline(Duration::from_secs(5), async {
            let mut retry = WaitRetry::new("test");
            retry.failed(&down());
            retry.succeeded();
            std::future::pending::<Result<()>>().await
        })
        .await;
        assert!(matches!(quiet, Err(Error::Timeout(_))), "{quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_change_after_an_outage_times_out_as_a_plain_timeout() {
        let looks = AtomicU32::new(0);
        let healed = Instant::now() + Duration::from_secs(30);
        let result = with_deadline(
            Duration::from_secs(60),
            RetryPolicy::default().wait_until("test", None, || async {
                looks.fetch_add(1, Ordering::SeqCst);
                if Instant::now() < healed {
                    return Err(down());
                }
                // The store answers "not yet", and the change never comes.
                Ok(Look::<(), _>::NotYet(std::future::pending::<Result<()>>()))
            }),
        )
        .await;
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
        assert!(
            looks.load(Ordering::SeqCst) > 2,
            "the outage was ridden out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_wait_for_a_change_pauses_before_the_next_look() {
        let started = Instant::now();
        let looks = AtomicU32::new(0);
        let value = RetryPolicy::default()
            .wait_until("test", None, || async {
                Ok(match looks.fetch_add(1, Ordering::SeqCst) {
                    0..3 => Look::NotYet(async { Err::<(), _>(down()) }),
                    n => Look::Ready(n),
                })
            })
            .await
            .unwrap();
        assert_eq!(value, 3);
        // Three refused waits: three pauses of the wait schedule (10, 20, 40 ms).
        assert!(
            started.elapsed() >= Duration::from_millis(70),
            "{:?}",
            started.elapsed()
        );

        let refused = RetryPolicy::default()
            .wait_until("test", None, || async {
                Ok(Look::<(), _>::NotYet(async {
                    Err::<(), _>(Error::NotHeld)
                }))
            })
            .await;
        assert!(matches!(refused, Err(Error::NotHeld)), "{refused:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_until_ends_with_session_lost_while_the_store_fails() {
        let lost = CancellationToken::new();
        let canceller = lost.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            canceller.cancel();
        });
        let result = RetryPolicy::default()
            .wait_until("test", Some(&lost), || async {
                Err::<Look<(), std::future::Pending<Result<()>>>, _>(down())
            })
            .await;
        assert!(matches!(result, Err(Error::SessionLost)), "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_shot_calls_stay_within_the_budget() {
        let policy = RetryPolicy::default();
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let far = started + Duration::from_secs(3600);
        let result = policy
            .one_shot(
                "test",
                Idempotence::Idempotent,
                Failure::of,
                failing_until(far, &calls, down),
            )
            .await;
        assert!(result.is_err());
        assert!(started.elapsed() <= ONE_SHOT_BUDGET);
        assert!(calls.load(Ordering::SeqCst) > 3);

        // Within the budget, an idempotent call rides out a short outage.
        let calls = AtomicU32::new(0);
        let healed = Instant::now() + Duration::from_secs(2);
        let result = policy
            .one_shot(
                "test",
                Idempotence::Idempotent,
                Failure::of,
                failing_until(healed, &calls, down),
            )
            .await;
        assert!(result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_mutation_that_may_have_been_applied_is_not_repeated() {
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let far = Instant::now() + Duration::from_secs(3600);
        let started = Instant::now();
        let result = policy
            .one_shot(
                "test",
                Idempotence::Mutation,
                Failure::of,
                failing_until(far, &calls, down),
            )
            .await;
        assert!(matches!(result, Err(Error::Connection { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);

        // One surely not sent is repeated, mutation or not.
        let calls = AtomicU32::new(0);
        let healed = Instant::now() + Duration::from_millis(100);
        let result = policy
            .one_shot(
                "test",
                Idempotence::Mutation,
                |_: &Error| Failure::NotSent,
                failing_until(healed, &calls, down),
            )
            .await;
        assert!(result.is_ok());
        assert!(calls.load(Ordering::SeqCst) > 1);

        // An answer from the store is never repeated.
        let calls = AtomicU32::new(0);
        let result = policy
            .one_shot(
                "test",
                Idempotence::Idempotent,
                Failure::of,
                failing_until(far, &calls, || Error::NotHeld),
            )
            .await;
        assert!(matches!(result, Err(Error::NotHeld)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn releases_retry_within_the_budget_or_until_the_session_ends() {
        let policy = RetryPolicy::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result = policy
            .release("test", None, failing_until(far, &calls, down))
            .await;
        assert!(matches!(result, Err(Error::Connection { .. })));
        assert!(started.elapsed() <= ONE_SHOT_BUDGET);
        assert!(started.elapsed() >= ONE_SHOT_BUDGET / 2);

        let lost = CancellationToken::new();
        let firing = lost.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            firing.cancel();
        });
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result = policy
            .release("test", Some(&lost), failing_until(far, &calls, down))
            .await;
        assert!(matches!(result, Err(Error::SessionLost)));
        assert!(started.elapsed() >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_loops_pause_up_to_a_second_and_start_over_after_a_success() {
        let mut retry = WaitRetry::new("test");
        assert_eq!(retry.failed(&down()), Some(FIRST_PAUSE));
        assert!(retry.is_failing());
        tokio::time::advance(Duration::from_secs(60)).await;
        let pauses: Vec<_> = (0..10).filter_map(|_| retry.failed(&down())).collect();
        assert_eq!(
            pauses.len(),
            10,
            "a wait never gives up on a transient error"
        );
        assert_eq!(pauses.last(), Some(&LONGEST_PAUSE));
        retry.succeeded();
        assert!(!retry.is_failing());
        assert_eq!(retry.failed(&down()), Some(FIRST_PAUSE));
        assert_eq!(retry.failed(&Error::NotHeld), None);
    }

    /// A subscription fed by the test: each wake-up is a number.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<u32>);

    impl Wakes for Fed {
        type Wake = u32;

        async fn next_wake(&mut self) -> Result<u32> {
            self.0.recv().await.ok_or_else(down)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_wait_hands_each_look_the_wake_up_that_ended_the_wait_before_it() {
        let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
        let looks = std::sync::Mutex::new(Vec::new());
        let value = RetryPolicy::default()
            .wait_woken("test", None, Fed(woken), |woke| {
                let mut looks = looks.lock().unwrap();
                looks.push(woke);
                let n = looks.len();
                // The test's wake-up is sent at the second look: the third (at once, the
                // wake-up left for the wait after it) does not take it, the fourth does.
                if n == 2 {
                    wake.send(7).unwrap();
                }
                let answer = match n {
                    1 => Look::NotYet(Some(Duration::from_secs(5))),
                    2 => Look::NotYet(Some(Duration::ZERO)),
                    3 => Look::NotYet(None),
                    _ => Look::Ready(n),
                };
                futures::future::ready(Ok(answer))
            })
            .await
            .unwrap();
        assert_eq!(value, 4);
        // The first look has nothing, the second follows a re-check, the third comes at
        // once, the fourth follows the wake-up.
        assert_eq!(*looks.lock().unwrap(), vec![None, None, None, Some(7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_wait_ends_when_its_session_is_lost() {
        let (_wake, woken) = tokio::sync::mpsc::unbounded_channel();
        let lost = CancellationToken::new();
        let firing = lost.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            firing.cancel();
        });
        let result: Result<()> = RetryPolicy::default()
            .wait_woken("test", Some(&lost), Fed(woken), |_| {
                futures::future::ready(Ok(Look::NotYet(None)))
            })
            .await;
        assert!(matches!(result, Err(Error::SessionLost)));
    }
}
