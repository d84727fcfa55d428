//! Election: the time from the leader's `resign()` to the new leader seen by an
//! `observe()` stream (on a third session).
//!
//! Two candidates take turns: while one leads, the other campaigns; `settle` after
//! the campaign started (so it is queued in the store) the leader resigns and the
//! clock runs until the observer reports the other's value. Each campaign carries a
//! fresh value, so the observer's report identifies it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::{Election, Leadership, Session};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::args::Plan;
use crate::stats::Samples;
use crate::target::Target;
use crate::Result;

/// The outcome of the election case.
#[derive(Debug, Default)]
pub struct ElectionResult {
    /// Resign-to-observed latencies.
    pub samples: Samples,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

type Campaign = JoinHandle<(Arc<dyn Election>, distsync::Result<Leadership>)>;

fn campaign(election: Arc<dyn Election>, value: String) -> Campaign {
    tokio::spawn(async move {
        let outcome = election.campaign(value).await;
        (election, outcome)
    })
}

/// Measures leader changes on `target`.
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> ElectionResult {
    let mut result = ElectionResult::default();
    let mut sessions = Vec::new();
    if let Err(error) = measure(target, run_id, plan, &mut sessions, &mut result.samples).await {
        result.error = Some(error.to_string());
    }
    for session in sessions {
        if let Err(error) = session.close().await {
            tracing::debug!(%error, "closing an election session failed; it expires");
        }
    }
    result
}

async fn measure(
    target: &Target,
    run_id: &str,
    plan: &Plan,
    sessions: &mut Vec<Session>,
    samples: &mut Samples,
) -> Result<()> {
    let coordinator = &target.coordinator;
    let name = format!("{run_id}/election");
    for _ in 0..3 {
        sessions.push(coordinator.session().await?);
    }
    let observer = coordinator.election(&sessions[2], &name)?;
    let mut changes = observer.observe();
    let deadline = Instant::now() + plan.case_time;
    let wait = plan.case_time.max(Duration::from_secs(5));

    let first = coordinator.election(&sessions[0], &name)?;
    let mut leader = first.campaign("0-0").await?;
    let mut idle = Some(first);
    let mut pending = campaign(coordinator.election(&sessions[1], &name)?, "1-0".into());
    let mut pending_value = "1-0".to_owned();
    let mut who = 0;
    wait_for(&mut changes, "0-0", wait).await?;

    let warmup = 2;
    for round in 0..warmup + plan.elections {
        tokio::time::sleep(plan.settle).await;
        let start = Instant::now();
        leader.resign().await?;
        wait_for(&mut changes, &pending_value, wait).await?;
        let elapsed = start.elapsed();
        if round >= warmup {
            samples.push(elapsed);
        }
        let (election, granted) = tokio::time::timeout(wait, pending)
            .await
            .map_err(|_| "the next leader's campaign did not return")??;
        leader = granted?;
        who = 1 - who;
        let resigned = idle.take().ok_or("no idle candidate")?;
        idle = Some(election);
        pending_value = format!("{}-{}", 1 - who, round + 1);
        pending = campaign(resigned, pending_value.clone());
        if Instant::now() >= deadline {
            break;
        }
    }
    pending.abort();
    leader.resign().await?;
    Ok(())
}

/// Reads leader changes until one carries `value`.
async fn wait_for(
    changes: &mut futures::stream::BoxStream<
        'static,
        distsync::Result<distsync::election::LeaderInfo>,
    >,
    value: &str,
    wait: Duration,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.next()).await {
            Err(_) => return Err(format!("observe() did not report leader {value}").into()),
            Ok(None) => return Err("observe() ended".into()),
            Ok(Some(change)) => {
                if change?.value == value.as_bytes() {
                    return Ok(());
                }
            }
        }
    }
}
