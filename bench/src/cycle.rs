//! The uncontended lock+unlock cycle: distsync, the raw store commands and the peers
//! on one store, measured in interleaved rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use distsync::lock::{Fairness, LockOptions};
use distsync::{Coordinator, Locker, Session};

use crate::args::Plan;
use crate::contender::{not_started, Contender, CycleResult, Cycler, Role};
use crate::stats::{share, Samples};
use crate::target::Target;
use crate::Result;

/// The row label of distsync's fair lock.
pub const LABEL: &str = "distsync";

/// The row label of distsync's unfair lock.
pub const UNFAIR_LABEL: &str = "distsync, unfair";

/// distsync's cycle: `lock().await?.unlock().await?` on one locker of one session.
struct DistsyncCycle {
    session: Session,
    locker: Arc<dyn Locker>,
    /// Whether to time each `lock()` (the contended case's wait; the uncontended
    /// cycle goes without the clock reads).
    timed: bool,
    /// How long the last `lock()` took, when timed.
    wait: Option<Duration>,
}

/// distsync's cycle on a (fair) locker named `name` through a new session of
/// `coordinator`.
///
/// # Errors
/// The backend's error opening the session.
pub async fn distsync(coordinator: &Coordinator, name: &str) -> Result<Contender> {
    distsync_with(coordinator, name, Fairness::Fair).await
}

/// The row label and role of distsync's lock of `fairness`.
pub fn library(fairness: Fairness) -> (&'static str, Role) {
    match fairness {
        Fairness::Unfair => (UNFAIR_LABEL, Role::Unfair),
        _ => (LABEL, Role::Library),
    }
}

/// The lock options of `fairness`.
pub fn options(fairness: Fairness) -> LockOptions {
    match fairness {
        Fairness::Unfair => LockOptions::new().unfair(),
        _ => LockOptions::new(),
    }
}

/// distsync's cycle on a locker of `fairness` named `name` through a new session of
/// `coordinator`, as row [`LABEL`] or [`UNFAIR_LABEL`].
///
/// # Errors
/// The backend's error opening the session; [`distsync::Error::Unsupported`] for the
/// unfair lock on a backend that has none (the session is closed then).
pub async fn distsync_with(
    coordinator: &Coordinator,
    name: &str,
    fairness: Fairness,
) -> Result<Contender> {
    open(coordinator, name, fairness, false).await
}

/// [`distsync_with`], timing each `lock()` for [`Cycler::last_wait`] (the contended
/// case's wait).
///
/// # Errors
/// As [`distsync_with`].
pub async fn distsync_timed(
    coordinator: &Coordinator,
    name: &str,
    fairness: Fairness,
) -> Result<Contender> {
    open(coordinator, name, fairness, true).await
}

async fn open(
    coordinator: &Coordinator,
    name: &str,
    fairness: Fairness,
    timed: bool,
) -> Result<Contender> {
    let session = coordinator.session().await?;
    let locker = match coordinator.locker_with(&session, name, options(fairness)) {
        Ok(locker) => locker,
        Err(error) => {
            if let Err(closing) = session.close().await {
                tracing::debug!(%closing, "closing a session failed; it expires");
            }
            return Err(error.into());
        }
    };
    let cycler = DistsyncCycle {
        session,
        locker,
        timed,
        wait: None,
    };
    let (label, role) = library(fairness);
    Ok(Contender::new(label, role, cycler))
}

#[async_trait]
impl Cycler for DistsyncCycle {
    async fn cycle(&mut self) -> Result<()> {
        if !self.timed {
            self.locker.lock().await?.unlock().await?;
            return Ok(());
        }
        self.wait = None;
        let asked = Instant::now();
        let guard = self.locker.lock().await?;
        self.wait = Some(asked.elapsed());
        guard.unlock().await?;
        Ok(())
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }

    fn wakeups(&self) -> Option<u64> {
        Some(self.locker.wakeups())
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.session.close().await?;
        Ok(())
    }
}

/// Everything that runs the cycle on `target`: distsync's fair lock first, its unfair
/// lock, then the raw sequence and the peers this build has. Implementations that
/// cannot start are returned as failed results, with the reason (marked unsupported
/// for an unfair lock the backend does not have).
pub async fn contenders(
    target: &Target,
    run_id: &str,
    plan: &Plan,
) -> (Vec<Contender>, Vec<CycleResult>) {
    let name = |what: &str| format!("{run_id}/cycle/{what}");
    let mut libraries = Vec::new();
    for (fairness, what) in [(Fairness::Fair, "distsync"), (Fairness::Unfair, "unfair")] {
        let made = distsync_with(&target.coordinator, &name(what), fairness).await;
        let (label, role) = library(fairness);
        libraries.push(made.map_err(|error| (label.to_owned(), role, error)));
    }
    let raw = crate::raw::contender(target, &name("raw")).await;
    let peers = if plan.peers {
        crate::peers::contenders(target, &name("peer")).await
    } else {
        Vec::new()
    };
    let (mut ready, mut failed) = (Vec::new(), Vec::new());
    for contender in libraries.into_iter().chain(raw).chain(peers) {
        match contender {
            Ok(cycler) => ready.push(cycler),
            Err((label, role, error)) => failed.push(not_started(&label, role, &error)),
        }
    }
    (ready, failed)
}

/// Runs every contender: a warm-up each, then `plan.rounds` rounds in which each
/// contender (in rotating order) runs its share of cycles, capped at
/// `plan.case_time / plan.rounds` per round; with `plan.batch`, a round runs the
/// contenders by turns of that many cycles each, so that their samples of a round
/// span the same stretch of time (and the same load on the machine). A contender that
/// errors is dropped from later rounds with its error recorded (its `rounds` then stop
/// short). Each result keeps its samples round by round in `rounds` (index = round).
/// Closes every contender at the end.
pub async fn run(contenders: Vec<Contender>, plan: &Plan) -> Vec<CycleResult> {
    let mut slots: Vec<(Contender, CycleResult)> = contenders
        .into_iter()
        .map(|contender| {
            let result = CycleResult::new(&contender.label, contender.role);
            (contender, result)
        })
        .collect();
    let rounds = plan.rounds.max(1);
    let slice = plan.case_time / u32::try_from(rounds).unwrap_or(u32::MAX);
    for (contender, result) in &mut slots {
        let warmup = plan.warmup.max(1);
        let mut discard = Samples::new();
        let cycler = contender.cycler.as_mut();
        if let Err(error) = cycles(cycler, warmup, slice, &mut discard).await {
            result.error = Some(format!("warm-up: {error}"));
        }
    }
    let count = slots.len();
    for round in 0..rounds {
        // This round's share of each contender, and what it has used of its slice.
        let mut left: Vec<usize> = slots
            .iter()
            .map(|_| share(plan.cycles, rounds, round))
            .collect();
        let mut spent = vec![Duration::ZERO; count];
        let mut this_round: Vec<Samples> = vec![Samples::new(); count];
        let active: Vec<bool> = slots.iter().map(|(_, r)| r.error.is_none()).collect();
        // Turns of `plan.batch` cycles (or the whole share), in rotating order, until
        // every contender has run its share or used its slice.
        loop {
            let mut ran = false;
            for offset in 0..count {
                let index = (round + offset) % count;
                let (contender, result) = &mut slots[index];
                if result.error.is_some() || left[index] == 0 || spent[index] >= slice {
                    continue;
                }
                let batch = plan.batch.map_or(left[index], |b| b.clamp(1, left[index]));
                let started = Instant::now();
                let (cycler, cap) = (contender.cycler.as_mut(), slice - spent[index]);
                let outcome = cycles(cycler, batch, cap, &mut this_round[index]).await;
                if let Err(error) = outcome {
                    result.error = Some(error.to_string());
                }
                spent[index] += started.elapsed();
                left[index] -= batch;
                ran = true;
            }
            if !ran {
                break;
            }
        }
        for (index, (_, result)) in slots.iter_mut().enumerate() {
            if active[index] {
                let samples = std::mem::take(&mut this_round[index]);
                result.samples.extend(&samples);
                result.rounds.push(samples);
            }
        }
    }
    let mut results = Vec::with_capacity(count);
    for (contender, result) in slots {
        if let Err(error) = contender.cycler.close().await {
            tracing::warn!(label = %result.label, %error, "closing a contender failed");
        }
        results.push(result);
    }
    results
}

/// Runs up to `count` cycles within `cap`, recording each.
async fn cycles(
    cycler: &mut dyn Cycler,
    count: usize,
    cap: Duration,
    samples: &mut Samples,
) -> Result<()> {
    let deadline = Instant::now() + cap;
    for _ in 0..count {
        let start = Instant::now();
        // A cycle that hangs (a peer waiting on a lock it can never get) is an error,
        // not a stuck benchmark.
        let limit = cap.max(Duration::from_secs(5));
        match tokio::time::timeout(limit, cycler.cycle()).await {
            Ok(outcome) => outcome?,
            Err(_) => return Err(format!("one cycle took over {limit:?}").into()),
        }
        let elapsed = start.elapsed();
        samples.push(cycler.own_time().unwrap_or(elapsed));
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(())
}
