//! Contended hand-off: the time from a holder calling `unlock()` to the next waiter
//! holding, with 1, 10 and 100 waiters, each waiter on its own session, for the fair
//! lock and the unfair one.
//!
//! Every participant loops lock → hold → unlock → lock again, so `waiters` others are
//! always in line. A holder releases only once all the others are inside `lock()` and
//! the last of them entered at least `settle` ago, so every release hands over to a
//! queued waiter (not to a caller racing in late). The first `waiters + 1` grants (each
//! participant's first, paying any one-off setup) are not measured.
//!
//! On the unfair lock a holder that asks again at once may take the lock back before
//! the waiter its release woke (that is what the lock is for, and what the contended
//! case measures, [`crate::contended`]); here the releasing participant asks again
//! only once another one holds, so that every sample is a hand-off to a waiter: the
//! release, the store waking a waiter, and that waiter asking again. The same run
//! counts the wake-ups (the sum of [`Locker::wakeups`] over the participants' handles)
//! and the releases, whose quotient shows whether a release wakes one waiter or all.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use distsync::lock::Fairness;
use distsync::{Locker, Session};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::args::Plan;
use crate::stats::Samples;
use crate::target::Target;
use crate::Result;

/// The outcome for one waiter count.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandoffResult {
    /// The peer measured (its row label), or `None` for distsync.
    #[serde(default)]
    pub peer: Option<String>,
    /// Whether it is distsync's unfair lock (with `peer` `None`).
    #[serde(default)]
    pub unfair: bool,
    /// Waiters in line behind the holder.
    pub waiters: usize,
    /// Hand-off latencies.
    pub samples: Samples,
    /// Why the run stopped early or did not run.
    pub error: Option<String>,
    /// Whether it did not run because the backend does not have the lock
    /// ([`distsync::Error::Unsupported`]).
    #[serde(default)]
    pub unsupported: bool,
    /// Releases made by all participants over the run (distsync's rows).
    #[serde(default)]
    pub releases: usize,
    /// Wake-ups of all participants' handles over the run ([`Locker::wakeups`]), for
    /// distsync's rows.
    #[serde(default)]
    pub wakeups: Option<u64>,
}

impl HandoffResult {
    /// A result with nothing measured yet: `peer`'s (or distsync's, `None`) with
    /// `waiters` waiters.
    pub fn new(peer: Option<String>, waiters: usize) -> Self {
        Self {
            peer,
            unfair: false,
            waiters,
            samples: Samples::new(),
            error: None,
            unsupported: false,
            releases: 0,
            wakeups: None,
        }
    }

    /// Wake-ups per release, where counted.
    pub fn wakeups_per_release(&self) -> Option<f64> {
        let wakeups = self.wakeups?;
        (self.releases > 0).then(|| wakeups as f64 / self.releases as f64)
    }
}

/// Shared bookkeeping of one line of participants.
struct Line {
    state: Mutex<State>,
    changed: Notify,
    waiters: usize,
    settle: Duration,
    wanted: usize,
    deadline: Instant,
    /// Whether a releasing participant asks again only once another holds (the
    /// unfair lock, see the module docs).
    rejoin_after_grant: bool,
}

struct State {
    /// Participants inside `lock()`.
    waiting: usize,
    /// When the last participant entered `lock()`.
    last_entered: Instant,
    /// When the current holder started `unlock()`.
    released_at: Option<Instant>,
    /// Grants that followed a release.
    handoffs: usize,
    /// Every grant.
    grants: usize,
    /// Every release.
    releases: usize,
    samples: Samples,
    stop: bool,
}

impl Line {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stop(&self) {
        self.state().stop = true;
        self.changed.notify_waiters();
    }

    fn entering(&self) {
        let mut state = self.state();
        state.waiting += 1;
        state.last_entered = Instant::now();
        drop(state);
        self.changed.notify_waiters();
    }

    /// Records a grant at `at`; returns whether the run is over.
    fn granted(&self, at: Instant) -> bool {
        let mut state = self.state();
        state.waiting -= 1;
        state.grants += 1;
        if let Some(released) = state.released_at.take() {
            state.handoffs += 1;
            if state.handoffs > self.waiters + 1 {
                state.samples.push(at.saturating_duration_since(released));
            }
        }
        if state.samples.len() >= self.wanted || at >= self.deadline {
            state.stop = true;
        }
        let stop = state.stop;
        drop(state);
        if self.rejoin_after_grant {
            self.changed.notify_waiters();
        }
        stop
    }

    /// Grants so far.
    fn grants(&self) -> usize {
        self.state().grants
    }

    /// Waits until a grant after the `seen`-th (or the run's end): a releasing
    /// participant of the unfair lock asks again only then.
    async fn next_grant(&self, seen: usize) {
        loop {
            let changed = self.changed.notified();
            {
                let state = self.state();
                if state.stop || state.grants > seen {
                    return;
                }
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            // Past the deadline the others still take their last turn; a bound keeps
            // a lost notification from hanging the participant.
            let wait = left.max(Duration::from_millis(100));
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// Waits until every other participant is in line and settled (or the run ends).
    async fn full(&self) {
        loop {
            let changed = self.changed.notified();
            let remaining = {
                let state = self.state();
                if state.stop {
                    return;
                }
                if state.waiting >= self.waiters {
                    Some(self.settle.saturating_sub(state.last_entered.elapsed()))
                } else {
                    None
                }
            };
            match remaining {
                Some(remaining) if remaining.is_zero() => return,
                Some(remaining) => tokio::time::sleep(remaining).await,
                None => {
                    let left = self.deadline.saturating_duration_since(Instant::now());
                    if tokio::time::timeout(left, changed).await.is_err() {
                        self.stop();
                        return;
                    }
                }
            }
        }
    }

    /// Marks the start of a release; no sample follows a release after the stop.
    fn releasing(&self) {
        let mut state = self.state();
        state.releases += 1;
        state.released_at = (!state.stop).then(Instant::now);
    }
}

/// One participant: lock, wait for a full line, unlock, again, until the run stops.
/// A participant that fails stops the run, so no holder waits for it.
async fn participant(line: Arc<Line>, locker: Arc<dyn Locker>) -> Result<()> {
    let outcome = turns(&line, locker.as_ref()).await;
    if outcome.is_err() {
        line.stop();
    }
    outcome
}

async fn turns(line: &Line, locker: &dyn Locker) -> Result<()> {
    loop {
        line.entering();
        let guard = locker.lock().await?;
        let over = line.granted(Instant::now());
        if !over {
            line.full().await;
        }
        let grants = line.grants();
        line.releasing();
        guard.unlock().await?;
        if over || line.state().stop {
            return Ok(());
        }
        if line.rejoin_after_grant {
            line.next_grant(grants).await;
            if line.state().stop {
                return Ok(());
            }
        }
    }
}

/// Measures hand-offs of the (fair) lock on `target` with `waiters` waiters.
pub async fn run(target: &Target, run_id: &str, waiters: usize, plan: &Plan) -> HandoffResult {
    run_with(target, run_id, waiters, plan, Fairness::Fair).await
}

/// Measures hand-offs of the lock of `fairness` on `target` with `waiters` waiters.
/// A backend without the unfair lock gives a result marked unsupported.
pub async fn run_with(
    target: &Target,
    run_id: &str,
    waiters: usize,
    plan: &Plan,
    fairness: Fairness,
) -> HandoffResult {
    let unfair = fairness == Fairness::Unfair;
    let mut result = HandoffResult {
        unfair,
        ..HandoffResult::new(None, waiters)
    };
    if let Err(reason) = capacity(target, waiters).await {
        result.error = Some(reason);
        return result;
    }
    let name = if unfair {
        format!("{run_id}/handoff-unfair/{waiters}")
    } else {
        format!("{run_id}/handoff/{waiters}")
    };
    let (sessions, lockers) = match open_line(target, &name, waiters + 1, fairness).await {
        Ok(opened) => opened,
        Err((error, unsupported)) => {
            result.error = Some(error);
            result.unsupported = unsupported;
            return result;
        }
    };
    let line = Arc::new(Line {
        state: Mutex::new(State {
            waiting: 0,
            last_entered: Instant::now(),
            released_at: None,
            handoffs: 0,
            grants: 0,
            releases: 0,
            samples: Samples::new(),
            stop: false,
        }),
        changed: Notify::new(),
        waiters,
        settle: plan.settle,
        wanted: plan.handoffs,
        deadline: Instant::now() + plan.case_time,
        rejoin_after_grant: unfair,
    });
    let tasks: Vec<_> = lockers
        .iter()
        .map(|locker| tokio::spawn(participant(Arc::clone(&line), Arc::clone(locker))))
        .collect();
    // After the stop every waiter still gets the lock once, to leave.
    let drain = plan.case_time + Duration::from_secs(30);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout(drain, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                line.stop();
                result.error.get_or_insert(error.to_string());
            }
            Ok(Err(error)) => {
                line.stop();
                result
                    .error
                    .get_or_insert(format!("participant failed: {error}"));
            }
            Err(_) => {
                abort.abort();
                result
                    .error
                    .get_or_insert("participants did not finish in time".into());
            }
        }
    }
    {
        let mut state = line.state();
        result.samples = std::mem::take(&mut state.samples);
        result.releases = state.releases;
    }
    result.wakeups = Some(lockers.iter().map(|locker| locker.wakeups()).sum());
    drop(lockers);
    close(sessions, OPEN_AT_ONCE).await;
    result
}

/// Opens `count` sessions and a locker of `fairness` on `name` for each, 64 at a time
/// (a line of 1,001 sessions opened one by one takes most of the case's time on etcd
/// and PostgreSQL). On an error the sessions opened are closed, and the error says
/// whether the backend does not have the lock.
async fn open_line(
    target: &Target,
    name: &str,
    count: usize,
    fairness: Fairness,
) -> std::result::Result<(Vec<Session>, Vec<Arc<dyn Locker>>), (String, bool)> {
    let opened: Vec<_> = stream::iter(0..count)
        .map(|_| target.coordinator.session())
        .buffer_unordered(OPEN_AT_ONCE)
        .collect()
        .await;
    let (sessions, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let options = crate::cycle::options(fairness);
    let lockers: distsync::Result<Vec<_>> = sessions
        .iter()
        .map(|session| target.coordinator.locker_with(session, name, options))
        .collect();
    let failure = failed.into_iter().find_map(Result::err);
    match (failure, lockers) {
        (None, Ok(lockers)) => Ok((sessions, lockers)),
        (Some(error), _) | (None, Err(error)) => {
            close(sessions, OPEN_AT_ONCE).await;
            let unsupported = matches!(error, distsync::Error::Unsupported { .. });
            Err((format!("opening {count} sessions: {error}"), unsupported))
        }
    }
}

/// How many sessions of a line are opened or closed at once.
const OPEN_AT_ONCE: usize = 64;

/// Closes `sessions`, `in_flight` at a time (a session that fails to close expires).
pub(crate) async fn close(sessions: Vec<Session>, in_flight: usize) {
    stream::iter(sessions)
        .for_each_concurrent(in_flight, |session| async move {
            if let Err(error) = session.close().await {
                tracing::debug!(%error, "closing a session failed; it expires");
            }
        })
        .await;
}

/// Whether the store can take `waiters + 1` sessions at once: PostgreSQL sessions hold
/// no connection, but a backend opens up to 19 (its pools and its listener).
#[allow(unused_variables)]
async fn capacity(target: &Target, waiters: usize) -> std::result::Result<(), String> {
    #[cfg(feature = "postgres")]
    if target.kind.is_postgres() {
        let needed = 19;
        match crate::raw::postgres::free_connections(&target.url).await {
            Ok(free) if free < needed => {
                return Err(format!(
                    "not run: a backend needs up to {needed} connections (pools and \
                     listener, however many sessions); the server has {free} free under \
                     max_connections"
                ))
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not read max_connections; trying"),
        }
    }
    Ok(())
}
