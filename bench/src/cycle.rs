//! The uncontended lock+unlock cycle: distsync, the raw store commands and the peers
//! on one store, measured in interleaved rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use distsync::{Coordinator, Locker, Session};

use crate::args::Plan;
use crate::contender::{failure, CycleResult, Cycler, Role};
use crate::stats::Samples;
use crate::target::Target;
use crate::Result;

/// distsync's cycle: `lock().await?.unlock().await?` on one locker of one session.
pub struct DistsyncCycle {
    session: Session,
    locker: Arc<dyn Locker>,
}

impl std::fmt::Debug for DistsyncCycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistsyncCycle").finish_non_exhaustive()
    }
}

impl DistsyncCycle {
    /// A locker named `name` through a new session of `coordinator`.
    ///
    /// # Errors
    /// The backend's error opening the session.
    pub async fn new(coordinator: &Coordinator, name: &str) -> Result<Self> {
        let session = coordinator.session().await?;
        let locker = coordinator.locker(&session, name)?;
        Ok(Self { session, locker })
    }
}

#[async_trait]
impl Cycler for DistsyncCycle {
    fn label(&self) -> String {
        "distsync".into()
    }

    fn role(&self) -> Role {
        Role::Library
    }

    async fn cycle(&mut self) -> Result<()> {
        self.locker.lock().await?.unlock().await?;
        Ok(())
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.session.close().await?;
        Ok(())
    }
}

/// Everything that runs the cycle on `target`: distsync first, then the raw sequence
/// and the peers this build has. Implementations that cannot start are returned as
/// failed results, with the reason.
pub async fn contenders(
    target: &Target,
    run_id: &str,
    plan: &Plan,
) -> (Vec<Box<dyn Cycler>>, Vec<CycleResult>) {
    let mut ready: Vec<Box<dyn Cycler>> = Vec::new();
    let mut failed = Vec::new();
    let name = |what: &str| format!("{run_id}/cycle/{what}");
    match DistsyncCycle::new(&target.coordinator, &name("distsync")).await {
        Ok(cycler) => ready.push(Box::new(cycler)),
        Err(error) => failed.push(failure("distsync", Role::Library, &error)),
    }
    let others = crate::raw::contenders(target, &name("raw")).await;
    let others = if plan.peers {
        others
            .into_iter()
            .chain(crate::peers::contenders(target, &name("peer")).await)
            .collect()
    } else {
        others
    };
    for other in others {
        match other {
            Ok(cycler) => ready.push(cycler),
            Err((label, role, error)) => failed.push(failure(&label, role, &error)),
        }
    }
    (ready, failed)
}

/// Runs every contender: a warm-up each, then `plan.rounds` rounds in which each
/// contender (in rotating order) runs its share of cycles, capped at
/// `plan.case_time / plan.rounds` per round; with `plan.batch`, a round runs the
/// contenders by turns of that many cycles each, so that their samples of a round
/// span the same stretch of time (and the same load on the machine). A contender that errors is dropped from
/// later rounds with its error recorded (its `rounds` then stop short). Each result
/// keeps its samples round by round in `rounds` (index = round). Closes every
/// contender at the end.
pub async fn run(contenders: Vec<Box<dyn Cycler>>, plan: &Plan) -> Vec<CycleResult> {
    let mut slots: Vec<(Box<dyn Cycler>, CycleResult)> = contenders
        .into_iter()
        .map(|cycler| {
            let result = CycleResult {
                label: cycler.label(),
                role: cycler.role(),
                samples: Samples::new(),
                rounds: Vec::new(),
                error: None,
            };
            (cycler, result)
        })
        .collect();
    let rounds = plan.rounds.max(1);
    let slice = plan.case_time / u32::try_from(rounds).unwrap_or(u32::MAX);
    for (cycler, result) in &mut slots {
        let warmup = cycler.cycles(plan.warmup).max(1);
        let mut discard = Samples::new();
        if let Err(error) = cycles(cycler.as_mut(), warmup, slice, &mut discard).await {
            result.error = Some(format!("warm-up: {error}"));
        }
    }
    let count = slots.len();
    for round in 0..rounds {
        // This round's share of each contender, and what it has used of its slice.
        let mut left: Vec<usize> = slots
            .iter()
            .map(|(cycler, _)| crate::stats::share(cycler.cycles(plan.cycles), rounds, round))
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
                let (cycler, result) = &mut slots[index];
                if result.error.is_some() || left[index] == 0 || spent[index] >= slice {
                    continue;
                }
                let batch = plan.batch.map_or(left[index], |b| b.clamp(1, left[index]));
                let started = Instant::now();
                let outcome = cycles(
                    cycler.as_mut(),
                    batch,
                    slice - spent[index],
                    &mut this_round[index],
                )
                .await;
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
    for (cycler, result) in slots {
        if let Err(error) = cycler.close().await {
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
        samples.push(start.elapsed());
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(())
}
