//! How long the machine's runnable tasks waited for a CPU, as Linux's pressure stall
//! information counts it (`/proc/pressure/cpu`, its `some` line): the time during which
//! at least one runnable task was not running because every CPU was taken.
//!
//! A liveness bound ("some client is granted within so long of the heal") is a claim
//! about the store and the library, made with a margin for scheduling on an ordinary
//! machine. When the machine is starved (a CI runner's two cores shared by the store's
//! servers, child holders and other columns of the run), the grant chain waits for a
//! CPU at every step: the server that expires the lease, the waiter that is woken, the
//! child that reports its grant. The runner's own [`crate::stall`] meter does not see
//! that: its ticker runs on time while the servers and children starve. So a liveness
//! check takes the time the machine was starved within its window off the time the
//! grant took ([`Contention::within`]), and a missed bound then means the store or the
//! library was slow with CPU to spare, not that the machine was full. Every bounded step
//! of a case ([`crate::check::within`], [`crate::check::eventually`]) counts its bound
//! the same way ([`timeout_live`], [`Starved`]).
//!
//! The count is machine-wide: a task of another program waiting counts too. So on a
//! loaded machine the check is more lenient, never stricter; a grant that never comes
//! is still a violation. Where the file cannot be read (a kernel without pressure stall
//! information, or not Linux) nothing is taken off and the bound is as written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where Linux reports CPU pressure.
const PRESSURE_FILE: &str = "/proc/pressure/cpu";

/// How often the counter is read: a window's contention is counted between the first
/// and the last reading inside it, so at most two periods of it go uncounted.
const PERIOD: Duration = Duration::from_millis(100);

/// One reading: when (on the clock of a [`crate::history::Recorder`]) and the counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reading {
    at: Duration,
    stalled: Duration,
}

/// The readings of a [`Sampler`] so far: the contention of any window within them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Contention(Vec<Reading>);

impl Contention {
    /// Readings of `(at, counter)`, in time order, for tests of a liveness check.
    #[cfg(test)]
    pub(crate) fn from_readings(readings: &[(Duration, Duration)]) -> Self {
        Self(
            readings
                .iter()
                .map(|&(at, stalled)| Reading { at, stalled })
                .collect(),
        )
    }

    /// How long, between `from` and `to`, some runnable task waited for a CPU: the
    /// counter's growth between the first and the last reading inside the window (a
    /// lower bound of the window's own); zero without two readings inside it.
    pub(crate) fn within(&self, from: Duration, to: Duration) -> Duration {
        let mut inside = self
            .0
            .iter()
            .filter(|reading| reading.at >= from && reading.at <= to);
        let Some(first) = inside.next() else {
            return Duration::ZERO;
        };
        let last = inside.next_back().unwrap_or(first);
        last.stalled.saturating_sub(first.stalled)
    }
}

/// Reads the counter every [`PERIOD`] on the current runtime until dropped.
pub(crate) struct Sampler {
    readings: Arc<Mutex<Vec<Reading>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Starts reading, timing each reading since `start`; `None` outside a tokio
    /// runtime or where the counter cannot be read (see the module docs).
    pub(crate) fn start(start: Instant) -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        read_stalled()?;
        let readings = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::clone(&readings);
        let task = handle.spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // A read of a procfs file is a copy out of kernel memory: it does not
                // block the runtime's worker.
                let Some(stalled) = read_stalled() else {
                    return;
                };
                crate::check::lock_vec(&written).push(Reading {
                    at: start.elapsed(),
                    stalled,
                });
            }
        });
        Some(Self { readings, task })
    }

    /// The readings so far.
    pub(crate) fn contention(&self) -> Contention {
        Contention(crate::check::lock_vec(&self.readings).clone())
    }
}

/// How many times its bound a liveness wait ([`join_live`]) may last however starved
/// the machine, so that a grant that never comes still ends the wait. A wait cut there
/// by the cap ([`starved_past_cap`]) is inconclusive ([`crate::check::Fail::Starved`]):
/// the machine did not give it its bound of CPU; one the machine did give it is a
/// violation.
const STARVED_CAP: u32 = 4;

/// Waits for `task`, whose result a liveness bound covers: `bound` from `since` plus the
/// time the machine's runnable tasks waited for a CPU since then (as `pressure` counts
/// it, which started at `since`), and at most [`STARVED_CAP`] times `bound`. Past that,
/// judged as every bounded wait is ([`crate::check::unfinished_wait`]).
///
/// Cancel-safe: the task stays joinable.
pub(crate) async fn join_live<T: Send + 'static>(
    task: &mut crate::check::Task<T>,
    since: Instant,
    bound: Duration,
    pressure: Option<&Sampler>,
) -> crate::check::Check<T> {
    let cap = bound * STARVED_CAP;
    let starved = || {
        pressure.map_or(Duration::ZERO, |pressure| {
            pressure
                .contention()
                .within(Duration::ZERO, since.elapsed())
        })
    };
    loop {
        let limit = (bound + starved()).min(cap);
        let left = (since + limit).saturating_duration_since(Instant::now());
        if let Ok(result) = tokio::time::timeout(left, task.wait()).await {
            return result;
        }
        let starved = starved();
        if since.elapsed() >= (bound + starved).min(cap) {
            let doing = format!("waiting for {}", task.what());
            return crate::check::unfinished_wait(doing, bound, starved);
        }
    }
}

/// The time the machine's runnable tasks waited for a CPU since it was made: the
/// starved time of a bound that counts it without a [`Sampler`] (two reads of the
/// counter, at the start and whenever the bound is judged).
#[derive(Clone, Copy)]
pub(crate) struct Starved(Option<Duration>);

impl Starved {
    /// Starts counting now; nothing is ever counted where the file cannot be read.
    pub(crate) fn since_now() -> Self {
        Self(read_stalled())
    }

    /// The starved time since [`Starved::since_now`].
    pub(crate) fn so_far(&self) -> Duration {
        self.0
            .and_then(|first| Some(read_stalled()?.saturating_sub(first)))
            .unwrap_or_default()
    }

    /// `limit` stretched by the starved time so far, at most [`STARVED_CAP`] times it.
    pub(crate) fn stretch(&self, limit: Duration) -> Duration {
        (limit + self.so_far()).min(limit * STARVED_CAP)
    }
}

/// How long a session's renewals can go unanswered before its client declares it lost,
/// at the default margin: from the first renewal, a third of the TTL in, to the TTL less
/// a fifth. A session lost after the machine was starved that long is explained by the
/// machine: its renewal task waited for a CPU past its deadline on a serving store.
pub(crate) fn ride_out(ttl: Duration) -> Duration {
    ttl - ttl / 5 - ttl / 3
}

/// Awaits `fut` under a bound counted as [`join_live`]'s: `limit`, plus the time the
/// machine's runnable tasks waited for a CPU since the wait began, at most
/// [`STARVED_CAP`] times `limit` ([`Starved::stretch`]). Past that, `Err` with the
/// starved time. This is the bound of every [`crate::check::within`]: a step a case
/// expects within so long is promised that long of a machine with a CPU free, and an
/// operation that never finishes still ends the wait. Without the pressure file the
/// bound is `limit`.
///
/// Cancel-safety: dropping the future drops `fut`.
pub(crate) async fn timeout_live<F: std::future::Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, Duration> {
    let started = Instant::now();
    let starved = Starved::since_now();
    let mut deadline = started + limit;
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Ok(output) = tokio::time::timeout_at(deadline, fut.as_mut()).await {
            return Ok(output);
        }
        let stretched = started + starved.stretch(limit);
        if stretched <= deadline {
            return Err(starved.so_far());
        }
        deadline = stretched;
    }
}

/// Whether a wait of `limit` that [`timeout_live`] ended with `starved` was cut by the
/// cap ([`STARVED_CAP`]) rather than given `limit` of a machine with a CPU free: the
/// machine starved through so much of it that the wait measured nothing.
pub(crate) fn starved_past_cap(limit: Duration, starved: Duration) -> bool {
    limit + starved > limit * STARVED_CAP
}

/// How [`timeout_live`]'s wait of `limit` ended, for a failure's evidence: `did not
/// finish within` the limit, with the starved time it was given and the cap.
pub(crate) fn unfinished(limit: Duration, starved: Duration) -> String {
    format!(
        "did not finish within {limit:?} and the {starved:?} the machine's runnable tasks \
         waited for a CPU meanwhile (at most {:?})",
        limit * STARVED_CAP
    )
}

/// Polls `probe` as [`crate::check::eventually`] does until it yields `Some`, under a
/// liveness bound counted as [`join_live`]'s: `bound` from `since`, plus the time the
/// machine was CPU-starved since then, at most [`STARVED_CAP`] times `bound`.
pub(crate) async fn eventually_live<T, F, Fut>(
    since: Instant,
    bound: Duration,
    pressure: Option<&Sampler>,
    doing: impl std::fmt::Display,
    mut probe: F,
) -> crate::check::Check<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::check::Check<Option<T>>>,
{
    let cap = bound * STARVED_CAP;
    let mut step = Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        let starved = pressure.map_or(Duration::ZERO, |pressure| {
            pressure
                .contention()
                .within(Duration::ZERO, since.elapsed())
        });
        if since.elapsed() + step > (bound + starved).min(cap) {
            return crate::check::unfinished_wait(doing, bound, starved);
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(100));
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `some` counter of [`PRESSURE_FILE`], if it can be read.
fn read_stalled() -> Option<Duration> {
    parse_some_total(&std::fs::read_to_string(PRESSURE_FILE).ok()?)
}

/// The `total=` (microseconds) of the `some` line of a pressure file.
fn parse_some_total(text: &str) -> Option<Duration> {
    let line = text.lines().find(|line| line.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?;
    total.parse().ok().map(Duration::from_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_liveness_wait_returns_what_finishes_and_ends_at_its_bound() {
        let mut done = crate::check::Task::spawn("done", async { Ok(7) });
        let joined = join_live(&mut done, Instant::now(), ms(100), None).await;
        assert_eq!(joined.ok(), Some(7));
        let mut never =
            crate::check::Task::spawn("never", std::future::pending::<crate::check::Check<()>>());
        let started = Instant::now();
        assert!(join_live(&mut never, started, ms(100), None).await.is_err());
        assert!(started.elapsed() >= ms(100));
    }

    #[tokio::test]
    async fn a_live_timeout_returns_what_finishes_and_ends_an_endless_wait() {
        assert_eq!(timeout_live(ms(100), async { 7 }).await, Ok(7));
        let started = Instant::now();
        let starved = timeout_live(ms(100), std::future::pending::<()>())
            .await
            .expect_err("a wait that never finishes ends");
        let took = started.elapsed();
        assert!(took >= ms(100), "ended after {took:?}, before its limit");
        assert!(
            took >= ms(100) + starved.min(ms(300)) - ms(1),
            "ended after {took:?}, before its limit and the {starved:?} starved"
        );
        assert!(
            unfinished(ms(100), starved).starts_with("did not finish within 100ms"),
            "the evidence names the limit as the reachability judge reads it"
        );
    }

    #[test]
    fn only_a_wait_the_cap_cut_short_is_starved_past_it() {
        // A wait of 100 ms may last 400 ms: 300 ms starved still leaves it its 100 ms.
        assert!(!starved_past_cap(ms(100), ms(0)));
        assert!(!starved_past_cap(ms(100), ms(300)));
        assert!(starved_past_cap(ms(100), ms(301)));
    }

    fn contention(readings: &[(u64, u64)]) -> Contention {
        Contention::from_readings(
            &readings
                .iter()
                .map(|&(at, stalled)| (ms(at), ms(stalled)))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_some_line_total_is_read_in_microseconds() {
        let text = "some avg10=8.73 avg60=7.67 avg300=27.27 total=16549582927\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse_some_total(text),
            Some(Duration::from_micros(16_549_582_927))
        );
        assert_eq!(parse_some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(parse_some_total("some avg10=0.00 total=x\n"), None);
    }

    #[test]
    fn a_window_counts_the_growth_between_its_first_and_last_readings() {
        let readings = contention(&[(0, 0), (100, 50), (200, 150), (300, 150), (400, 400)]);
        assert_eq!(readings.within(ms(100), ms(300)), ms(100));
        assert_eq!(readings.within(ms(50), ms(450)), ms(350));
        assert_eq!(readings.within(ms(150), ms(250)), Duration::ZERO);
        assert_eq!(readings.within(ms(500), ms(900)), Duration::ZERO);
        assert_eq!(Contention::default().within(ms(0), ms(900)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_sampler_reads_a_counter_that_never_falls() {
        let start = Instant::now();
        let Some(sampler) = Sampler::start(start) else {
            // No pressure file here: nothing is taken off a bound (module docs).
            assert!(read_stalled().is_none());
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while sampler.contention().0.len() < 3 {
            assert!(Instant::now() < deadline, "no three readings within 5 s");
            tokio::time::sleep(PERIOD).await;
        }
        let readings = sampler.contention().0;
        assert!(readings
            .windows(2)
            .all(|pair| pair[0].at <= pair[1].at && pair[0].stalled <= pair[1].stalled));
    }
}
