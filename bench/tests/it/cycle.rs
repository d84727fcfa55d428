//! The cycle runner: warm-up, interleaved rounds, errors, and distsync's cycle on memory.

use async_trait::async_trait;
use clap::Parser;
use distsync_bench::args::{Args, Plan};
use distsync_bench::contender::{Contender, Cycler, Role};
use distsync_bench::cycle::*;
use distsync_bench::stats::Samples;
use distsync_bench::Result;

struct Counting {
    calls: usize,
    fail_at: Option<usize>,
}

#[async_trait]
impl Cycler for Counting {
    async fn cycle(&mut self) -> Result<()> {
        self.calls += 1;
        if Some(self.calls) == self.fail_at {
            return Err("boom".into());
        }
        Ok(())
    }
}

fn counting(fail_at: Option<usize>) -> Contender {
    Contender::new("counting", Role::Raw, Counting { calls: 0, fail_at })
}

#[tokio::test]
async fn runs_warmup_then_rounds_and_records_errors() {
    let plan = Plan::from_args(&Args::parse_from([
        "distsync-bench",
        "--quick",
        "--cycles",
        "10",
    ]));
    let results = run(vec![counting(None), counting(Some(plan.warmup + 3))], &plan).await;
    assert_eq!(results[0].samples.len(), 10);
    assert_eq!(results[0].rounds.len(), plan.rounds);
    assert_eq!(
        results[0].rounds.iter().map(Samples::len).sum::<usize>(),
        10
    );
    assert!(results[0].error.is_none());
    assert_eq!(results[1].samples.len(), 2);
    assert_eq!(results[1].error.as_deref(), Some("boom"));
}

/// A cycler in "another process": its own figure is a fixed 7 ms, far from what the
/// runner's clock sees.
struct SelfTimed;

#[async_trait]
impl Cycler for SelfTimed {
    async fn cycle(&mut self) -> Result<()> {
        Ok(())
    }

    fn own_time(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(7))
    }
}

#[tokio::test]
async fn a_cycler_timing_itself_is_recorded_with_its_own_figures() {
    let plan = Plan::from_args(&Args::parse_from([
        "distsync-bench",
        "--quick",
        "--cycles",
        "4",
    ]));
    let results = run(
        vec![Contender::new("self-timed", Role::Peer, SelfTimed)],
        &plan,
    )
    .await;
    let summary = results[0].samples.summary().unwrap();
    assert_eq!(summary.count, 4);
    assert_eq!(summary.p50, std::time::Duration::from_millis(7));
    assert_eq!(summary.p99, std::time::Duration::from_millis(7));
}

#[tokio::test]
async fn distsync_cycles_on_memory() {
    let coordinator = distsync::connect("memory://").await.unwrap();
    let cycler = distsync(&coordinator, "bench/cycle").await.unwrap();
    let plan = Plan::from_args(&Args::parse_from([
        "distsync-bench",
        "--quick",
        "--cycles",
        "5",
    ]));
    let results = run(vec![cycler], &plan).await;
    assert_eq!(results[0].samples.len(), 5);
    assert!(results[0].error.is_none());
    let session = coordinator.session().await.unwrap();
    let free = coordinator
        .locker(&session, "bench/cycle")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(free.is_some(), "the lock is free after the cycles");
}
