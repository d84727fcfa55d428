//! Plumbing for case bodies: typed failures, bounded waits, spawned tasks that abort
//! when dropped.
//!
//! A case body is an `async fn(Harness) -> Check`; every wait in it goes through
//! [`within`], [`Task::join`] or [`eventually`], so it is bounded and a timeout is
//! reported as a violation with evidence, never a hang.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::{Error, FencingToken};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cpu_pressure::{starved_past_cap, timeout_live, unfinished, Starved};
use crate::outcome::Outcome;

/// How long an operation that should be prompt (a grant after a release, a refusal,
/// a wake-up) may take before the case calls it a violation.
pub(crate) const PROMPT: Duration = Duration::from_secs(5);

/// The bound on a whole contention phase (hundreds of grants or transactions).
pub(crate) const LONG: Duration = Duration::from_secs(60);

/// Why a case body stopped short of `Holds`.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The guarantee does not hold; the evidence says why.
    Violated(String),
    /// The backend answered [`Error::Unsupported`].
    Unsupported(String),
    /// The case's set-up, before any fault, ended short for a reason that says nothing
    /// of the guarantee: a session that a loaded machine let lapse, a store that
    /// answered "unavailable". [`set_up`] starts such a set-up again; one that escapes
    /// it is reported as an [`Outcome::Error`]: the case measured nothing either way.
    SetUpLapsed(String),
    /// The verdict needed a window through which the machine starved: runnable tasks
    /// waited for a CPU (the kernel's pressure counter, [`crate::cpu_pressure`]) for so
    /// long that what the window should have shown cannot be required of the store. A
    /// history with no grant at all, whose liveness bound the starved time excused, is
    /// one ([`crate::history::never_granted`]). Reported as [`Outcome::Inconclusive`],
    /// and the case runs again once (see [`crate::run_case_in`]).
    Starved {
        /// How long the machine starved in the window.
        starved: Duration,
        /// The bound the window was judged with.
        bound: Duration,
        /// What the window was to show.
        why: String,
    },
}

/// What a case body returns when the guarantee holds.
#[derive(Debug)]
pub(crate) struct Holds {
    pub(crate) figure: Option<String>,
    pub(crate) detail: String,
}

impl Holds {
    /// Holds, with a detail and no figure.
    pub(crate) fn new(detail: impl Into<String>) -> Self {
        Self {
            figure: None,
            detail: detail.into(),
        }
    }

    /// Holds, with a figure.
    pub(crate) fn figure(figure: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            figure: Some(figure.into()),
            detail: detail.into(),
        }
    }
}

/// The result of a case body or of one of its steps.
pub(crate) type Check<T = Holds> = std::result::Result<T, Fail>;

impl From<Check> for Outcome {
    fn from(check: Check) -> Self {
        match check {
            Ok(Holds { figure, detail }) => Outcome::Holds { figure, detail },
            Err(Fail::Violated(evidence)) => Outcome::Violated { evidence },
            Err(Fail::Unsupported(reason)) => Outcome::Unsupported { reason },
            Err(Fail::SetUpLapsed(why)) => Outcome::Error {
                message: format!("the set-up before the fault did not complete: {why}"),
            },
            Err(Fail::Starved {
                starved,
                bound,
                why,
            }) => Outcome::Inconclusive {
                stalled: starved,
                slack: bound,
                detail: format!(
                    "{why}: the machine starved {} ms of the window, past what its {} ms bound \
                     leaves",
                    starved.as_millis(),
                    bound.as_millis()
                ),
            },
        }
    }
}

/// Returns from the case body with a violation unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($evidence:tt)+) => {
        if !$cond {
            return Err($crate::check::Fail::Violated(format!($($evidence)+)));
        }
    };
}
pub(crate) use ensure;

/// A violation.
pub(crate) fn violated<T>(evidence: impl Into<String>) -> Check<T> {
    Err(Fail::Violated(evidence.into()))
}

/// Turns a store error into a [`Fail`] that says what the case was doing.
pub(crate) trait Context<T> {
    /// `Unsupported` stays `Unsupported`; every other error is a violation.
    fn ctx(self, doing: impl Display) -> Check<T>;

    /// For a set-up step before any fault (starting an external holder, say): a session
    /// lost or a store out of reach is [`Fail::SetUpLapsed`] (the machine's doing:
    /// nothing was measured yet); otherwise as [`Context::ctx`]. A step whose failure
    /// could itself be the violation the case looks for must use [`Context::ctx`].
    fn set_up_ctx(self, doing: impl Display) -> Check<T>;

    /// For a step of a case that injects no fault: a session lost after the machine's
    /// runnable tasks waited for a CPU, since `starved` began counting, for at least a
    /// session's ride-out ([`crate::cpu_pressure::ride_out`] of `ttl`) is
    /// [`Fail::Starved`]: its renewals can have waited for a CPU past their deadline on
    /// a serving store, and the case measured nothing. Otherwise as [`Context::ctx`]: a
    /// session lost on a machine that kept up is the library's or the store's failure.
    fn live_ctx(self, doing: impl Display, starved: &Starved, ttl: Duration) -> Check<T>;
}

impl<T> Context<T> for Result<T, Error> {
    fn ctx(self, doing: impl Display) -> Check<T> {
        self.map_err(|error| match error {
            Error::Unsupported { .. } => Fail::Unsupported(format!("{doing}: {error}")),
            error => Fail::Violated(format!("{doing}: unexpected error: {error}")),
        })
    }

    fn set_up_ctx(self, doing: impl Display) -> Check<T> {
        match self {
            Err(error) if error.needs_new_session() || error.is_transient() => {
                Err(Fail::SetUpLapsed(format!("{doing}: {error}")))
            }
            other => other.ctx(doing),
        }
    }

    fn live_ctx(self, doing: impl Display, starved: &Starved, ttl: Duration) -> Check<T> {
        match self {
            Err(error) if error.needs_new_session() => {
                let (so_far, ride_out) = (starved.so_far(), crate::cpu_pressure::ride_out(ttl));
                if so_far >= ride_out {
                    return Err(Fail::Starved {
                        starved: so_far,
                        bound: ride_out,
                        why: format!("{doing}: {error}"),
                    });
                }
                Err(error).ctx(doing)
            }
            other => other.ctx(doing),
        }
    }
}

/// How many times [`set_up`] starts a set-up that lapsed.
pub(crate) const SET_UP_TRIES: usize = 3;

/// How long [`set_up`] waits, before trying again, for the runtime to keep up for
/// [`SET_UP_CALM`] ([`crate::stall::calm`]): the two waits between three tries stay well
/// inside the bounds the cases give a whole trial.
pub(crate) const SET_UP_CALM_LIMIT: Duration = Duration::from_secs(3);

/// How long the runtime must keep up before a lapsed set-up tries again: longer than a
/// fault session's renewal period (a third of its 2 s TTL), so that the next try's
/// first renewals run on a machine that has calmed down.
pub(crate) const SET_UP_CALM: Duration = Duration::from_millis(800);

/// Runs `attempt` (a case's or a trial's set-up, everything before its fault, given its
/// try's number from 1) again while it ends in [`Fail::SetUpLapsed`], at most
/// [`SET_UP_TRIES`] times in all. A try should use names of its own: what a lapsed one
/// left behind is not cleaned up first.
///
/// Before each new try it waits (at most [`SET_UP_CALM_LIMIT`]) for the harness's
/// runtime to keep up for [`SET_UP_CALM`]: a set-up lapses when the machine is starved
/// (a wave of fault cases starting at once, child processes starting, CPU hogs
/// beside the runner), and a try started at once inside the same burst lapses the same
/// way.
pub(crate) async fn set_up<T, F, Fut>(what: impl Display, attempt: F) -> Check<T>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Check<T>>,
{
    set_up_tries(SET_UP_TRIES, what, attempt).await
}

/// As [`set_up`], at most `most` tries in all: for a case whose own bounds leave room
/// for more tries than [`SET_UP_TRIES`].
pub(crate) async fn set_up_tries<T, F, Fut>(
    most: usize,
    what: impl Display,
    mut attempt: F,
) -> Check<T>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let mut tries = 1;
    loop {
        match attempt(tries).await {
            Err(Fail::SetUpLapsed(why)) if tries >= most => {
                return Err(Fail::SetUpLapsed(format!("{most} tries, the last: {why}")))
            }
            Err(Fail::SetUpLapsed(why)) => {
                let calmed = crate::stall::calm(SET_UP_CALM, SET_UP_CALM_LIMIT).await;
                tracing::info!(
                    %what,
                    tries,
                    %why,
                    calmed,
                    "the set-up lapsed before the fault; again"
                );
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Turns a set-up step's failure into [`Fail::SetUpLapsed`] when `session`, which the
/// step depends on, has already been lost: before any fault, that is the machine's
/// doing, not the guarantee's. A step whose failure could itself be the violation the
/// case looks for (another client granted early) must not go through this.
pub(crate) fn lapsed_when_lost(fail: Fail, session: &distsync_core::Session) -> Fail {
    match fail {
        Fail::Violated(why) if session.is_lost() => {
            Fail::SetUpLapsed(format!("{why} (its session was lost before the fault)"))
        }
        other => other,
    }
}

/// Turns a set-up step's violation into [`Fail::SetUpLapsed`]: for a step before the
/// fault whose slowness says nothing of the guarantee (a waiter the store has not
/// counted yet), so that a loaded machine starts the set-up again instead of reading
/// as a violation. As with [`lapsed_when_lost`], a step whose failure could itself be
/// the violation the case looks for (another client granted early) must not go
/// through this.
pub(crate) fn lapsed(fail: Fail) -> Fail {
    match fail {
        Fail::Violated(why) => Fail::SetUpLapsed(why),
        other => other,
    }
}

/// Awaits a set-up step (connecting, opening a session) for `limit` as [`within`]
/// counts it: a timeout, a transient error ([`Error::is_transient`]) or a lost session is
/// [`Fail::SetUpLapsed`], any other error as [`within`] says.
pub(crate) async fn within_set_up<T>(
    limit: Duration,
    doing: impl Display,
    fut: impl Future<Output = Result<T, Error>>,
) -> Check<T> {
    let started = Instant::now();
    let result = timeout_live(limit, fut).await;
    crate::slack::record(&doing, started.elapsed(), limit);
    match result {
        Ok(Err(error)) if error.is_transient() || matches!(error, Error::SessionLost) => {
            Err(Fail::SetUpLapsed(format!("{doing}: {error}")))
        }
        Ok(result) => result.ctx(doing),
        Err(starved) => Err(Fail::SetUpLapsed(format!(
            "{doing}: {}",
            unfinished(limit, starved)
        ))),
    }
}

/// Awaits `fut` for `limit` of a machine with a CPU free
/// ([`crate::cpu_pressure::timeout_live`]); a timeout or an error is a violation.
pub(crate) async fn within<T>(
    limit: Duration,
    doing: impl Display,
    fut: impl Future<Output = Result<T, Error>>,
) -> Check<T> {
    let started = Instant::now();
    let result = timeout_live(limit, fut).await;
    crate::slack::record(&doing, started.elapsed(), limit);
    match result {
        Ok(result) => result.ctx(doing),
        Err(starved) => unfinished_wait(doing, limit, starved),
    }
}

/// The verdict on a wait of `limit` that [`timeout_live`] ended with `starved`: one the
/// cap cut short ([`starved_past_cap`]) measured nothing ([`Fail::Starved`]); one given
/// `limit` of a machine with a CPU free is a violation.
pub(crate) fn unfinished_wait<T>(
    doing: impl Display,
    limit: Duration,
    starved: Duration,
) -> Check<T> {
    if starved_past_cap(limit, starved) {
        return Err(Fail::Starved {
            starved,
            bound: limit,
            why: format!("{doing}: {}", unfinished(limit, starved)),
        });
    }
    violated(format!("{doing}: {}", unfinished(limit, starved)))
}

/// `fut.bounded(doing)`: [`within`] with the [`PROMPT`] bound, for the one-shot
/// operations of a case (opening a session, unlocking, resigning, revoking).
pub(crate) trait Bounded<T>: Future<Output = Result<T, Error>> + Sized {
    /// Awaits the operation for at most [`PROMPT`].
    async fn bounded(self, doing: impl Display) -> Check<T> {
        within(PROMPT, doing, self).await
    }

    /// Awaits a set-up step (opening a session before the case measures anything) for
    /// at most [`PROMPT`], as [`within_set_up`]: a step that lapses measured nothing, so
    /// it is not a violation of the store.
    async fn set_up(self, doing: impl Display) -> Check<T> {
        within_set_up(PROMPT, doing, self).await
    }
}

impl<T, F: Future<Output = Result<T, Error>>> Bounded<T> for F {}

/// Awaits a future whose output is already a [`Check`], for `limit` as [`within`]
/// counts it.
pub(crate) async fn within_check<T>(
    limit: Duration,
    doing: impl Display,
    fut: impl Future<Output = Check<T>>,
) -> Check<T> {
    let started = Instant::now();
    let result = timeout_live(limit, fut).await;
    crate::slack::record(&doing, started.elapsed(), limit);
    match result {
        Ok(result) => result,
        Err(starved) => unfinished_wait(doing, limit, starved),
    }
}

/// A client of `h`'s store through the partition proxy, with the URL's `timeout=` and
/// `connect_timeout=` set to `request` and `connect`, so a case knows the bounds of the
/// client it cuts off; connected as [`proxied_client`] connects.
pub(crate) async fn partitioned_client_with_timeouts(
    h: &crate::harness::Harness,
    request: Duration,
    connect: Duration,
) -> Check<Box<dyn crate::faults::Partitioned>> {
    let settings = format!(
        "timeout={}ms&connect_timeout={}ms",
        request.as_millis(),
        connect.as_millis()
    );
    proxied_client(h.faults(), h.backend().as_ref(), &settings, "a client").await
}

/// A client of `backend`'s store through a partition proxy of `faults`, `settings`
/// added to its URL (see [`crate::Faults::partitioned_client_with`]); `who` names it in
/// a failure. Connecting comes before any cut and is not what a case measures: a
/// connection that a loaded machine did not finish (a short `connect_timeout`, a store
/// slow to accept) is tried again, for at most [`LONG`], and one not made by then is a
/// lapsed set-up ([`Fail::SetUpLapsed`]), never a violation.
pub(crate) async fn proxied_client(
    faults: &dyn crate::faults::Faults,
    backend: &dyn distsync_core::Backend,
    settings: &str,
    who: &str,
) -> Check<Box<dyn crate::faults::Partitioned>> {
    let transient = AtomicUsize::new(0);
    within_set_up(
        LONG,
        format!("connecting {who} through the proxy"),
        retry_transient(&transient, LONG, || {
            faults.partitioned_client_with(backend, settings)
        }),
    )
    .await
}

/// Calls `op` again while it fails with an error a caller may retry
/// ([`Error::is_transient`]: a store answering "unavailable" while it elects a leader
/// or fails over, a connection being re-established), for at most `limit`: counts
/// each such error in `transient` and pauses 20 ms before the next attempt. Returns
/// the first success or other error, or the last transient error once `limit` has
/// passed.
pub(crate) async fn retry_transient<T, F, Fut>(
    transient: &AtomicUsize,
    limit: Duration,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match op().await {
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                transient.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(%error, "transient error, retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Polls `probe` with small growing steps until it yields `Some`, for `limit` stretched
/// by the time the machine was CPU-starved meanwhile ([`Starved::stretch`]).
///
/// For conditions the store does not notify about (a lock another client can now
/// take, a leader gone); the steps start at 5 ms and double up to 100 ms.
pub(crate) async fn eventually<T, F, Fut>(
    limit: Duration,
    doing: impl Display,
    mut probe: F,
) -> Check<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<Option<T>>>,
{
    let started = Instant::now();
    let starved = Starved::since_now();
    let mut step = Duration::from_millis(5);
    loop {
        if let Some(value) = within_check(limit, &doing, probe()).await? {
            crate::slack::record(&doing, started.elapsed(), limit);
            return Ok(value);
        }
        if started.elapsed() + step > starved.stretch(limit) {
            crate::slack::record(&doing, limit, limit);
            return unfinished_wait(doing, limit, starved.so_far());
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(100));
    }
}

/// Polls `probe` as [`eventually`] does until it yields `Some`, for as long as the
/// count it reports alongside keeps changing: a violation only when the count stood
/// still for `stuck`. For work that many processes do at once (consumers applying
/// items): on a loaded machine they do it slowly, and a bound on the whole would take a
/// slow machine for work that stopped; a count that stands still for `stuck` is work
/// that stopped (an item nobody can take). The evidence gives the count.
pub(crate) async fn eventually_progressing<T, F, Fut>(
    stuck: Duration,
    doing: impl Display,
    mut probe: F,
) -> Check<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<(u64, Option<T>)>>,
{
    let started = Instant::now();
    let (mut count, mut since) = (None, started);
    let mut step = Duration::from_millis(5);
    loop {
        let (now, value) = within_check(stuck, &doing, probe()).await?;
        if let Some(value) = value {
            crate::slack::record(&doing, since.elapsed(), stuck);
            return Ok(value);
        }
        if count != Some(now) {
            (count, since) = (Some(now), Instant::now());
        }
        if Instant::now() + step > since + stuck {
            crate::slack::record(&doing, stuck, stuck);
            return violated(format!(
                "{doing}: stood at {now} for {stuck:?}, {:?} after the wait began",
                started.elapsed()
            ));
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(100));
    }
}

/// A spawned part of a case (a contender, a waiter, a consumer). Aborted when dropped,
/// so a case that stops early leaves nothing running.
pub(crate) struct Task<T> {
    what: String,
    handle: Option<JoinHandle<Check<T>>>,
}

impl<T: Send + 'static> Task<T> {
    /// Spawns `fut`, described as `what` in evidence.
    pub(crate) fn spawn(
        what: impl Into<String>,
        fut: impl Future<Output = Check<T>> + Send + 'static,
    ) -> Self {
        Self {
            what: what.into(),
            handle: Some(tokio::spawn(crate::slack::carried(fut))),
        }
    }

    /// What the task is.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Whether the task has returned (or was joined).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the task's result, without a bound (bound it with [`within_check`]
    /// or use [`Task::join`]). Cancel-safe: dropping this future leaves the task
    /// running and joinable.
    pub(crate) async fn wait(&mut self) -> Check<T> {
        let Some(handle) = self.handle.as_mut() else {
            return violated(format!("{} was joined twice", self.what));
        };
        let joined = handle.await;
        self.handle = None;
        match joined {
            Ok(result) => result,
            Err(error) if error.is_panic() => violated(format!("{} panicked: {error}", self.what)),
            Err(error) => violated(format!("{} was cancelled: {error}", self.what)),
        }
    }

    /// Waits for the task's result for at most `limit`; a timeout is a violation.
    pub(crate) async fn join(&mut self, limit: Duration) -> Check<T> {
        let what = self.what.clone();
        within_check(limit, format!("waiting for {what}"), self.wait()).await
    }

    /// Checks that the task is still blocked after `settle`: it must not have returned.
    pub(crate) async fn ensure_blocked(
        &self,
        settle: Duration,
        because: impl Display,
    ) -> Check<()> {
        tokio::time::sleep(settle).await;
        if self.is_finished() {
            return violated(format!(
                "{} returned after {settle:?} although {because}",
                self.what
            ));
        }
        Ok(())
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Joins every task, all within `limit` from now, stretched by the time the machine was
/// CPU-starved meanwhile ([`Starved::stretch`]).
pub(crate) async fn join_all<T: Send + 'static>(
    tasks: &mut [Task<T>],
    limit: Duration,
) -> Check<Vec<T>> {
    // One bound for all, stretched as `within`'s is, and judged as one wait: a first
    // task that took the whole stretch leaves the next one nothing, and that is the
    // machine's doing when the cap cut the stretch, not the next task's.
    let started = Instant::now();
    let mut waiting = 0;
    let joined = timeout_live(limit, async {
        let mut results = Vec::with_capacity(tasks.len());
        for (index, task) in tasks.iter_mut().enumerate() {
            waiting = index;
            results.push(task.wait().await?);
        }
        Ok(results)
    })
    .await;
    let doing = tasks
        .get(waiting)
        .map_or_else(String::new, |task| format!("waiting for {}", task.what));
    crate::slack::record(&doing, started.elapsed(), limit);
    match joined {
        Ok(results) => results,
        Err(starved) => unfinished_wait(doing, limit, starved),
    }
}

/// Checks tokens strictly increase in recorded order.
pub(crate) fn strictly_increasing(tokens: &[(usize, FencingToken)]) -> Check<()> {
    for pair in tokens.windows(2) {
        let ((who_a, a), (who_b, b)) = (pair[0], pair[1]);
        ensure!(
            b > a,
            "grant by contender {who_b} got token {b}, not above the previous grant's {a} (contender {who_a})"
        );
    }
    Ok(())
}

/// Locks a std mutex, ignoring poisoning (a panicking task is reported separately).
pub(crate) fn lock_vec<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What contenders do inside a lock to show it excludes: count themselves in (an
/// overlap is another holder already inside) and make a non-atomic read-modify-write
/// of a counter (read, yield, write back plus one), which loses increments if two
/// holders overlap.
#[derive(Debug, Default)]
pub(crate) struct CriticalSection {
    holders: AtomicUsize,
    overlaps: AtomicUsize,
    counter: AtomicU64,
}

impl CriticalSection {
    /// One pass through the critical section.
    pub(crate) async fn pass(&self) {
        if self.holders.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let seen = self.counter.load(Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.counter.store(seen + 1, Ordering::SeqCst);
        self.holders.fetch_sub(1, Ordering::SeqCst);
    }

    /// The passes that found another holder inside.
    pub(crate) fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }

    /// What the counter reads: the number of passes unless updates were lost.
    pub(crate) fn counted(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }
}

/// Milliseconds of a duration, for figures.
pub(crate) fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Seconds of a duration, for figures of fault cases (about a TTL).
pub(crate) fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// A rate, for figures.
pub(crate) fn per_second(count: usize, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!("{:.0}/s", count as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn within_turns_a_timeout_into_evidence() {
        let result: Check<()> = within(
            Duration::from_millis(10),
            "waiting forever",
            futures::future::pending(),
        )
        .await;
        // Violated, or starved when the machine did not give the wait its 10 ms (which
        // of the two is `unfinished_wait`'s, tested below): either names the step.
        match result {
            Err(Fail::Violated(evidence) | Fail::Starved { why: evidence, .. }) => {
                assert!(evidence.contains("waiting forever"), "{evidence}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wait_the_machine_gave_its_bound_is_violated_one_it_did_not_is_starved() {
        let limit = Duration::from_millis(100);
        let given: Check<()> = unfinished_wait("locking", limit, Duration::from_millis(300));
        assert!(matches!(given, Err(Fail::Violated(_))), "{given:?}");
        let cut: Check<()> = unfinished_wait("locking", limit, Duration::from_millis(301));
        match cut {
            Err(Fail::Starved { bound, why, .. }) => {
                assert_eq!(bound, limit);
                assert!(why.contains("locking"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_keep_unsupported_apart() {
        let unsupported: Result<(), Error> = Err(Error::unsupported("memory", "lock"));
        assert!(matches!(
            unsupported.ctx("locking"),
            Err(Fail::Unsupported(_))
        ));
        let other: Result<(), Error> = Err(Error::NotHeld);
        assert!(matches!(other.ctx("locking"), Err(Fail::Violated(_))));
    }

    #[tokio::test]
    async fn eventually_is_bounded() {
        let result: Check<()> =
            eventually(Duration::from_millis(30), "never", || async { Ok(None) }).await;
        // Starved instead when the machine did not give the wait its 30 ms.
        assert!(
            matches!(result, Err(Fail::Violated(_) | Fail::Starved { .. })),
            "{result:?}"
        );
        let mut n = 0;
        let got = eventually(Duration::from_secs(1), "third time", || {
            n += 1;
            let n = n;
            async move { Ok((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn tasks_report_panics_and_abort_on_drop() {
        let mut task: Task<()> = Task::spawn("a panicking task", async { panic!("boom") });
        match task.join(Duration::from_secs(1)).await {
            Err(Fail::Violated(evidence)) => assert!(evidence.contains("panicked"), "{evidence}"),
            other => panic!("{other:?}"),
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let blocked: Task<()> = Task::spawn("blocked", async move {
            let _tx = tx;
            futures::future::pending::<()>().await;
            Ok(())
        });
        blocked
            .ensure_blocked(Duration::from_millis(5), "it waits forever")
            .await
            .unwrap();
        drop(blocked);
        // The sender is dropped with the aborted task.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn a_lapsed_set_up_starts_again_and_then_reports_no_measure() {
        let tries = AtomicUsize::new(0);
        let third: Check<usize> = set_up("trial", |attempt| {
            tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 3 {
                    Err(Fail::SetUpLapsed(format!("try {attempt} lapsed")))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(third.unwrap(), 3);
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let never: Check = set_up("trial", |attempt| async move {
            Err(Fail::SetUpLapsed(format!("try {attempt} lapsed")))
        })
        .await;
        match Outcome::from(never) {
            Outcome::Error { message } => assert!(message.contains("try 3 lapsed"), "{message}"),
            other => panic!("a set-up that always lapses must be an error, not {other:?}"),
        }

        // A violation in the set-up is not tried again.
        let tries = AtomicUsize::new(0);
        let violated: Check = set_up("trial", |_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { violated("granted early") }
        })
        .await;
        assert!(matches!(violated, Err(Fail::Violated(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_transient_error_or_a_timeout_in_set_up_is_a_lapse() {
        let transient: Check<()> = within_set_up(PROMPT, "connecting", async {
            Err(Error::connection("test", "refused"))
        })
        .await;
        assert!(
            matches!(transient, Err(Fail::SetUpLapsed(_))),
            "{transient:?}"
        );
        let slow: Check<()> = within_set_up(
            Duration::from_millis(10),
            "connecting",
            futures::future::pending(),
        )
        .await;
        assert!(matches!(slow, Err(Fail::SetUpLapsed(_))), "{slow:?}");
        let refused: Check<()> = within_set_up(PROMPT, "connecting", async {
            Err(Error::InvalidArgument("bad".into()))
        })
        .await;
        assert!(matches!(refused, Err(Fail::Violated(_))), "{refused:?}");
    }
}
