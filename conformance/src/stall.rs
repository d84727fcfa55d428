//! How long the harness itself stalled while a case ran: a ticker on the case's own
//! runtime records the largest overshoot between when a tick was due and when it ran.
//!
//! A case judges the store by the clock of the process that runs it: it stamps a grant
//! when its task next runs, gives a waiter [`crate::Harness::settle`] to register, and
//! expects a session's renewals and `lost()` deadline to fire on time. A machine that
//! starves the runner (other CI jobs on the same two cores, a noisy neighbour, a swap
//! storm) delays all of those at once, and a case can then measure a violation that the
//! store never committed. [`StallMeter`] measures that delay while the case runs, so the
//! runner can tell a verdict reached with a live harness from one that is not
//! ([`crate::Outcome::Inconclusive`], see [`crate::run_case_in`]).
//!
//! ## Why a ticker on the runtime, not a thread of its own
//!
//! Everything a case judges with runs as tokio tasks on the runtime that runs the case:
//! its steps, its timers, the sessions' renewals and their client-side deadlines. A task
//! on that runtime woken by a timer ([`STALL_TICK`], [`MissedTickBehavior::Delay`]) is late
//! exactly when those are: when the OS gives the runtime's worker threads no CPU, when
//! the whole process is descheduled or paused, and also when the runtime's workers are
//! busy or its timer is not driven. A dedicated OS thread sleeping in a loop sees only
//! the first two: it wakes on time while every worker is taken, so it would call a
//! harness live whose tasks ran late. Its only extra reach, a thread starved while the
//! workers are not, says nothing about the case. So the meter is the ticker alone.
//!
//! What the ticker does not see: a task that blocks its worker thread (a blocking call
//! inside a case) while other workers stay free. The cases make no blocking calls on
//! the runtime; on a current-thread runtime the ticker sees those too.
//!
//! ## The threshold
//!
//! A stall is held against a case when it is longer than [`stall_slack`]: the harness's
//! settle time or [`STALL_FLOOR`], whichever is larger. The settle time is the finest
//! bound the cases judge with (a waiter that has not registered within it reads as out
//! of order), so a longer stall can make an order or blocking check fail by itself.
//! [`STALL_FLOOR`], a quarter of a second, is below the smallest margin any fault case's
//! session keeps (a fifth of the two-second TTL of fault and holder sessions: 400 ms),
//! so a stall under it cannot push a deadline past its margin on its own; and it is far
//! above what a live runtime overshoots a tick by, a millisecond or two on an idle
//! machine and tens of milliseconds on a loaded two-core one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How often the ticker of a [`StallMeter`] is due: fine enough to time a stall of
/// [`STALL_FLOOR`] to a tenth of it, coarse enough to cost nothing beside a case
/// (fifty wake-ups a second).
pub const STALL_TICK: Duration = Duration::from_millis(20);

/// The smallest stall that makes a violated verdict untrusted, whatever the settle
/// time (see the module docs, "The threshold").
pub const STALL_FLOOR: Duration = Duration::from_millis(250);

/// The slack a verdict is judged with: a stall longer than this during a case makes
/// its violated verdict untrusted. `settle` or [`STALL_FLOOR`], whichever is larger
/// (see the module docs, "The threshold").
///
/// ```
/// use std::time::Duration;
/// use distsync_conformance::{stall_slack, STALL_FLOOR};
///
/// assert_eq!(stall_slack(Duration::from_millis(100)), STALL_FLOOR);
/// assert_eq!(stall_slack(Duration::from_secs(1)), Duration::from_secs(1));
/// ```
pub fn stall_slack(settle: Duration) -> Duration {
    settle.max(STALL_FLOOR)
}

/// A ticker on the current runtime: a tick due every period, a late one delaying the
/// next rather than bunching them ([`MissedTickBehavior::Delay`]), so that each tick
/// tells how late the runtime ran it.
struct Ticker(tokio::time::Interval);

impl Ticker {
    fn every(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self(interval)
    }

    /// Waits for the next tick: when it ran, and how long after it was due.
    async fn next(&mut self) -> (Instant, Duration) {
        let due = self.0.tick().await;
        let now = Instant::now();
        (now, now.saturating_duration_since(due))
    }
}

/// What the ticker and the reader share.
#[derive(Debug)]
struct Shared {
    /// The largest overshoot seen so far.
    worst: Duration,
    /// When the ticker last ran (its start, before the first tick).
    last_run: Instant,
}

/// Measures the scheduling lag of the current tokio runtime from [`StallMeter::start`]
/// to [`StallMeter::stop`]: the largest overshoot between when a tick was due and when
/// the ticker ran (see the module docs for why that measure). Dropping it stops the
/// ticker.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use distsync_conformance::StallMeter;
///
/// let meter = StallMeter::start();
/// // The only thread of the runtime blocked: the ticker cannot run meanwhile.
/// std::thread::sleep(Duration::from_millis(300));
/// assert!(meter.stop() >= Duration::from_millis(250));
/// # }
/// ```
#[derive(Debug)]
pub struct StallMeter {
    shared: Arc<Mutex<Shared>>,
    period: Duration,
    ticker: JoinHandle<()>,
}

impl StallMeter {
    /// Starts a ticker every [`STALL_TICK`] on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as [`tokio::spawn`]).
    pub fn start() -> Self {
        Self::with_period(STALL_TICK)
    }

    /// Starts a ticker every `period` (at least a millisecond) on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as [`tokio::spawn`]).
    pub fn with_period(period: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        let shared = Arc::new(Mutex::new(Shared {
            worst: Duration::ZERO,
            last_run: Instant::now(),
        }));
        let ticks = Arc::clone(&shared);
        let ticker = tokio::spawn(async move {
            let mut ticker = Ticker::every(period);
            loop {
                let (now, late) = ticker.next().await;
                let mut shared = ticks.lock().unwrap_or_else(PoisonError::into_inner);
                shared.worst = shared.worst.max(late);
                shared.last_run = now;
            }
        });
        Self {
            shared,
            period,
            ticker,
        }
    }

    /// The largest stall so far, counting a tick that is due and has not run yet (a
    /// stall still going on when the case ended).
    pub fn worst(&self) -> Duration {
        let now = Instant::now();
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = now.saturating_duration_since(shared.last_run + self.period);
        shared.worst.max(pending)
    }

    /// Stops the ticker and returns the largest stall ([`StallMeter::worst`]).
    pub fn stop(self) -> Duration {
        self.worst()
    }
}

/// The longest a tick may overshoot for the runtime to count as keeping up, in
/// [`calm`]: a few ticks' worth, above what a live runtime on a loaded two-core machine
/// overshoots by (tens of milliseconds), far below a stall that lapses a session.
pub(crate) const CALM_OVERSHOOT: Duration = Duration::from_millis(60);

/// Waits until the current runtime has kept up for `window` (no tick of a ticker every
/// [`STALL_TICK`] late by more than [`CALM_OVERSHOOT`]), or until `limit` has passed,
/// whichever comes first; returns whether it found the calm.
///
/// For a set-up that a starved machine let lapse (see [`crate::check::set_up`]): its next
/// try waits out the burst that starved it (clients connecting, child processes
/// starting, a wave of fault cases starting at once) instead of starting inside
/// it and lapsing the same way. Bounded, so a machine that never calms down costs
/// `limit`, not the case.
///
/// Cancel-safety: cancel-safe; it only reads the clock.
pub(crate) async fn calm(window: Duration, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut ticker = Ticker::every(STALL_TICK);
    let mut calm_since = Instant::now();
    loop {
        let (now, late) = ticker.next().await;
        if late > CALM_OVERSHOOT {
            calm_since = now;
        } else if now.saturating_duration_since(calm_since) >= window {
            return true;
        }
        if now >= deadline {
            return false;
        }
    }
}

impl Drop for StallMeter {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blocked_runtime_is_measured_and_a_live_one_is_not() {
        let meter = StallMeter::start();
        // The runtime live: its tasks sleep and wake on time.
        tokio::time::sleep(STALL_TICK * 10).await;
        let live = meter.worst();
        assert!(live < STALL_FLOOR, "a live runtime stalled {live:?}");
        // The runtime's only thread blocked.
        std::thread::sleep(Duration::from_millis(400));
        tokio::time::sleep(STALL_TICK * 3).await;
        let blocked = meter.stop();
        assert!(blocked >= Duration::from_millis(350), "{blocked:?}");
    }

    #[tokio::test]
    async fn a_stall_still_going_on_at_the_end_counts() {
        let meter = StallMeter::start();
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(300));
        // Read at once: the ticker has had no chance to run after the stall.
        let stalled = meter.stop();
        assert!(stalled >= Duration::from_millis(250), "{stalled:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calm_waits_out_a_stall_and_gives_up_at_its_limit() {
        // A blocked runtime at the start: the calm window starts after it.
        let started = Instant::now();
        let waiting = tokio::spawn(calm(Duration::from_millis(200), Duration::from_secs(5)));
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(300));
        assert!(waiting.await.unwrap());
        assert!(started.elapsed() >= Duration::from_millis(500));

        // A runtime blocked again and again never calms: the limit ends the wait.
        let started = Instant::now();
        let waiting = tokio::spawn(calm(Duration::from_millis(400), Duration::from_millis(600)));
        let blocker = tokio::spawn(async {
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(100));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        assert!(!waiting.await.unwrap());
        blocker.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(600));
    }

    #[test]
    fn the_slack_is_the_settle_time_or_the_floor() {
        assert_eq!(stall_slack(Duration::ZERO), STALL_FLOOR);
        assert_eq!(
            stall_slack(Duration::from_millis(600)),
            Duration::from_millis(600)
        );
    }
}
