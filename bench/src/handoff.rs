//! Contended hand-off: the time from a holder calling `unlock()` to the next waiter
//! holding, with 1, 10 and 100 waiters, each waiter on its own session.
//!
//! Every participant loops lock → hold → unlock → lock again, so `waiters` others are
//! always in line. A holder releases only once all the others are inside `lock()` and
//! the last of them entered at least `settle` ago, so every release hands over to a
//! queued waiter (not to a caller racing in late). The first `waiters + 1` grants (each
//! participant's first, paying any one-off setup) are not measured.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Waiters in line behind the holder.
    pub waiters: usize,
    /// Hand-off latencies.
    pub samples: Samples,
    /// Why the run stopped early or did not run.
    pub error: Option<String>,
}

/// Shared bookkeeping of one line of participants.
struct Line {
    state: Mutex<State>,
    changed: Notify,
    waiters: usize,
    settle: Duration,
    wanted: usize,
    deadline: Instant,
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
        if let Some(released) = state.released_at.take() {
            state.handoffs += 1;
            if state.handoffs > self.waiters + 1 {
                state.samples.push(at.saturating_duration_since(released));
            }
        }
        if state.samples.len() >= self.wanted || at >= self.deadline {
            state.stop = true;
        }
        state.stop
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
        line.releasing();
        guard.unlock().await?;
        if over || line.state().stop {
            return Ok(());
        }
    }
}

/// Measures hand-offs on `target` with `waiters` waiters.
pub async fn run(target: &Target, run_id: &str, waiters: usize, plan: &Plan) -> HandoffResult {
    let mut result = HandoffResult {
        peer: None,
        waiters,
        samples: Samples::new(),
        error: None,
    };
    if let Err(reason) = capacity(target, waiters).await {
        result.error = Some(reason);
        return result;
    }
    let name = format!("{run_id}/handoff/{waiters}");
    let (sessions, lockers) = match open_line(target, &name, waiters + 1).await {
        Ok(opened) => opened,
        Err(error) => {
            result.error = Some(error);
            return result;
        }
    };
    let line = Arc::new(Line {
        state: Mutex::new(State {
            waiting: 0,
            last_entered: Instant::now(),
            released_at: None,
            handoffs: 0,
            samples: Samples::new(),
            stop: false,
        }),
        changed: Notify::new(),
        waiters,
        settle: plan.settle,
        wanted: plan.handoffs,
        deadline: Instant::now() + plan.case_time,
    });
    let tasks: Vec<_> = lockers
        .into_iter()
        .map(|locker| tokio::spawn(participant(Arc::clone(&line), locker)))
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
    result.samples = std::mem::take(&mut line.state().samples);
    close(sessions, OPEN_AT_ONCE).await;
    result
}

/// Opens `count` sessions and a locker on `name` for each, 64 at a time (a line of
/// 1,001 sessions opened one by one takes most of the case's time on etcd and
/// PostgreSQL). On an error the sessions opened are closed.
async fn open_line(
    target: &Target,
    name: &str,
    count: usize,
) -> std::result::Result<(Vec<Session>, Vec<Arc<dyn Locker>>), String> {
    let opened: Vec<_> = stream::iter(0..count)
        .map(|_| target.coordinator.session())
        .buffer_unordered(OPEN_AT_ONCE)
        .collect()
        .await;
    let (sessions, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let lockers: distsync::Result<Vec<_>> = sessions
        .iter()
        .map(|session| target.coordinator.locker(session, name))
        .collect();
    let failure = failed.into_iter().find_map(Result::err);
    match (failure, lockers) {
        (None, Ok(lockers)) => Ok((sessions, lockers)),
        (Some(error), _) | (None, Err(error)) => {
            close(sessions, OPEN_AT_ONCE).await;
            Err(format!("opening {count} sessions: {error}"))
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
    if target.kind == crate::target::BackendKind::Postgres {
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
