//! Runs the selected cases on every selected backend and collects a [`Report`].

use std::time::{Duration, Instant};

use crate::aggregate::AggregateResult;
use crate::args::{Args, Case, Plan};
use crate::contended::ContendedResult;
use crate::contender::{CycleResult, Role};
use crate::cycle;
use crate::election::{self, ElectionResult};
use crate::handoff::{self, HandoffResult};
use crate::machine::{self, Machine};
use crate::queue::{self, QueueResult};
use crate::scale::ScaleResult;
use crate::stm::{self, StmResult};
use crate::target::{BackendKind, Target};
use distsync::lock::Fairness;

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    /// The machine and when.
    pub machine: Machine,
    /// The arguments the bench was given.
    pub arguments: Vec<String>,
    /// Counts and caps.
    pub plan: Plan,
    /// Results per backend, in report order.
    pub backends: Vec<BackendReport>,
    /// Backends not measured, with the reason.
    pub skipped: Vec<(BackendKind, String)>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// The results on one backend.
#[derive(Debug)]
pub struct BackendReport {
    /// Which backend.
    pub kind: BackendKind,
    /// The URL measured, its password masked: the report is published.
    pub url: String,
    /// The server's version.
    pub server: Option<String>,
    /// Cycle rows: distsync, raw, peers.
    pub cycle: Vec<CycleResult>,
    /// Hand-off per waiter count: distsync's fair lock, its unfair lock and the peers.
    pub handoff: Vec<HandoffResult>,
    /// Contended throughput per implementation and client count.
    pub contended: Vec<ContendedResult>,
    /// Leader changes.
    pub election: Option<ElectionResult>,
    /// Queue throughput per client count.
    pub queue: Vec<QueueResult>,
    /// STM per worker count.
    pub stm: Vec<StmResult>,
    /// At scale: holds grown in steps, waiters, hand-offs with the holds held.
    pub scale: Option<ScaleResult>,
    /// Many clients each cycling its own lock: aggregate cycles per second.
    pub aggregate: Option<AggregateResult>,
}

impl BackendReport {
    /// A report of `kind` at `url` (the server `server`) with no figures yet; it keeps
    /// `url` with its password masked.
    pub fn new(kind: BackendKind, url: &str, server: Option<String>) -> Self {
        Self {
            kind,
            url: distsync::store::redact_url(url),
            server,
            cycle: Vec::new(),
            handoff: Vec::new(),
            contended: Vec::new(),
            election: None,
            queue: Vec::new(),
            stm: Vec::new(),
            scale: None,
            aggregate: None,
        }
    }

    /// The first measured cycle row of `role`.
    pub fn cycle_row(&self, role: Role) -> Option<&CycleResult> {
        self.cycle
            .iter()
            .find(|row| row.role == role && !row.samples.is_empty())
    }
}

/// Runs the bench as `args` ask.
pub async fn run(args: &Args) -> Report {
    let started = Instant::now();
    let plan = Plan::from_args(args);
    let mut report = Report {
        machine: Machine::read(),
        arguments: std::env::args().skip(1).collect(),
        plan: plan.clone(),
        backends: Vec::new(),
        skipped: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let run_id = crate::run_id("distsync-bench");
    for (kind, url) in args.selected() {
        let url = match url {
            Ok(url) => url,
            Err(reason) => {
                tracing::warn!(backend = %kind, %reason, "skipped");
                report.skipped.push((kind, reason));
                continue;
            }
        };
        let target = match Target::connect(kind, url).await {
            Ok(target) => target,
            Err(error) => {
                let reason = format!("could not connect: {error}");
                tracing::warn!(backend = %kind, %reason, "skipped");
                report.skipped.push((kind, reason));
                continue;
            }
        };
        report
            .backends
            .push(backend(&target, &format!("{run_id}/{kind}"), &plan).await);
    }
    report.machine.finish();
    report.elapsed = started.elapsed();
    report
}

/// Runs every selected case on `target`.
async fn backend(target: &Target, run_id: &str, plan: &Plan) -> BackendReport {
    let kind = target.kind;
    let runs = |case: Case| plan.runs(case) && kind.measures(case);
    let mut report = BackendReport::new(kind, &target.url, machine::server_version(target).await);
    if runs(Case::Cycle) {
        tracing::info!(backend = %kind, "cycle: distsync, raw sequence and peers");
        let (ready, mut failed) = cycle::contenders(target, run_id, plan).await;
        report.cycle = cycle::run(ready, plan).await;
        report.cycle.append(&mut failed);
    }
    if runs(Case::Handoff) {
        // The reason the backend gave for not having the unfair lock, once known: not
        // asked again with every waiter count.
        let mut unfair_unsupported: Option<Option<String>> = None;
        for &waiters in &plan.waiters {
            tracing::info!(backend = %kind, waiters, "hand-off");
            report
                .handoff
                .push(handoff::run(target, run_id, waiters, plan).await);
            let unfair = match &unfair_unsupported {
                Some(error) => HandoffResult {
                    unfair: true,
                    unsupported: true,
                    error: error.clone(),
                    ..HandoffResult::new(None, waiters)
                },
                None => {
                    tracing::info!(backend = %kind, waiters, "hand-off, unfair lock");
                    handoff::run_with(target, run_id, waiters, plan, Fairness::Unfair).await
                }
            };
            if unfair.unsupported {
                unfair_unsupported.get_or_insert_with(|| unfair.error.clone());
            }
            report.handoff.push(unfair);
            if plan.peers {
                let peers = crate::peers::handoffs(target, run_id, waiters, plan).await;
                report.handoff.extend(peers);
            }
        }
    }
    if runs(Case::Contended) {
        tracing::info!(backend = %kind, clients = ?plan.contended_clients, "contended");
        report.contended = crate::contended::run(target, run_id, plan).await;
    }
    if runs(Case::Election) {
        tracing::info!(backend = %kind, "election");
        report.election = Some(election::run(target, run_id, plan).await);
    }
    if runs(Case::Queue) {
        for &clients in &plan.clients {
            tracing::info!(backend = %kind, clients, "queue");
            report
                .queue
                .push(queue::run(target, run_id, clients, plan).await);
        }
    }
    if runs(Case::Stm) {
        for &workers in &plan.clients {
            tracing::info!(backend = %kind, workers, "stm");
            report
                .stm
                .push(stm::run(target, run_id, workers, plan).await);
        }
    }
    if runs(Case::Scale) {
        tracing::info!(
            backend = %kind,
            sizes = ?plan.scale_sizes,
            waiting = plan.scale_waiting,
            "scale"
        );
        report.scale = Some(crate::scale::isolated::run(target, run_id, plan).await);
    }
    if runs(Case::Aggregate) {
        tracing::info!(backend = %kind, clients = plan.aggregate_clients, "aggregate");
        report.aggregate = Some(crate::aggregate::run(target, run_id, plan).await);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_keeps_no_password() {
        let report = BackendReport::new(
            BackendKind::Mysql,
            "mysql://app:s3cret@127.0.0.1:3306/app",
            None,
        );
        assert_eq!(report.url, "mysql://app:***@127.0.0.1:3306/app");
        assert!(!format!("{report:?}").contains("s3cret"));
    }
}
