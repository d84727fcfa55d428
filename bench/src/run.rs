//! Runs the selected cases on every selected backend and collects a [`Report`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::aggregate::AggregateResult;
use crate::args::{Args, Case, Plan};
use crate::cycle::{self, CycleResult};
use crate::election::{self, ElectionResult};
use crate::handoff::{self, HandoffResult};
use crate::machine::{self, Machine};
use crate::probe::WatchDelivery;
use crate::queue::{self, QueueResult};
use crate::residue::ResidueResult;
use crate::scale::ScaleResult;
use crate::stm::{self, StmResult};
use crate::target::{BackendKind, Target};

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
    /// `etcdctl version`, when etcd was measured.
    pub etcdctl: Option<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// The results on one backend.
#[derive(Debug)]
pub struct BackendReport {
    /// Which backend.
    pub kind: BackendKind,
    /// The URL measured.
    pub url: String,
    /// The server's version.
    pub server: Option<String>,
    /// Cycle rows: distsync, raw, peers.
    pub cycle: Vec<CycleResult>,
    /// Hand-off per waiter count.
    pub handoff: Vec<HandoffResult>,
    /// Leader changes.
    pub election: Option<ElectionResult>,
    /// etcd only: watch delivery from a synced and an unsynced start revision.
    pub watch_delivery: Option<WatchDelivery>,
    /// Queue throughput per client count.
    pub queue: Vec<QueueResult>,
    /// STM per worker count.
    pub stm: Vec<StmResult>,
    /// At scale: holds grown in steps, waiters, hand-offs with the holds held.
    pub scale: Option<ScaleResult>,
    /// Many clients each cycling its own lock: aggregate cycles per second.
    pub aggregate: Option<AggregateResult>,
    /// What many released names leave in the store.
    pub residue: Option<ResidueResult>,
}

impl BackendReport {
    /// The first measured cycle row of `role`.
    pub fn cycle_row(&self, role: cycle::Role) -> Option<&CycleResult> {
        self.cycle
            .iter()
            .find(|row| row.role == role && !row.samples.is_empty())
    }
}

/// The backends `args` select, each with its URL or the reason it is skipped.
pub(crate) fn selected(args: &Args) -> Vec<(BackendKind, Result<String, String>)> {
    let mut kinds = if args.backends.is_empty() {
        BackendKind::ALL
            .into_iter()
            .filter(|kind| kind.compiled_in())
            .collect()
    } else {
        args.backends.clone()
    };
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let url = if !kind.compiled_in() {
                Err(format!(
                    "not compiled in: build with `--features {kind}` (or `full`)"
                ))
            } else {
                let given = match kind {
                    BackendKind::Memory => Some("memory://".to_owned()),
                    BackendKind::Etcd => args.etcd_url.clone(),
                    BackendKind::Redis => args.redis_url.clone(),
                    BackendKind::Postgres => args.postgres_url.clone(),
                };
                given.ok_or_else(|| {
                    format!(
                        "no URL: set {} (eval \"$(scripts/servers.sh env)\")",
                        kind.url_variable().unwrap_or("its URL")
                    )
                })
            };
            (kind, url)
        })
        .collect()
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
        etcdctl: None,
        elapsed: Duration::ZERO,
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let run_id = format!("distsync-bench/{stamp}-{}", std::process::id());
    for (kind, url) in selected(args) {
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
        if kind == BackendKind::Etcd && plan.peers {
            report.etcdctl = machine::etcdctl_version();
        }
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
    let mut report = BackendReport {
        kind,
        url: target.url.clone(),
        server: machine::server_version(target).await,
        cycle: Vec::new(),
        handoff: Vec::new(),
        election: None,
        watch_delivery: None,
        queue: Vec::new(),
        stm: Vec::new(),
        scale: None,
        aggregate: None,
        residue: None,
    };
    if plan.runs(Case::Cycle) {
        tracing::info!(backend = %kind, "cycle: distsync, raw sequence and peers");
        let (ready, mut failed) = cycle::contenders(target, run_id, plan).await;
        report.cycle = cycle::run(ready, plan).await;
        report.cycle.append(&mut failed);
    }
    if plan.runs(Case::Handoff) {
        for &waiters in &plan.waiters {
            tracing::info!(backend = %kind, waiters, "hand-off");
            report
                .handoff
                .push(handoff::run(target, run_id, waiters, plan).await);
        }
    }
    if plan.runs(Case::Election) {
        tracing::info!(backend = %kind, "election");
        report.election = Some(election::run(target, run_id, plan).await);
        #[cfg(feature = "etcd")]
        if kind == BackendKind::Etcd {
            tracing::info!(backend = %kind, "watch delivery probe");
            report.watch_delivery = Some(
                crate::probe::etcd_watch_delivery(
                    &target.url,
                    &format!("{run_id}/watch-probe"),
                    plan.probes,
                )
                .await,
            );
        }
    }
    if plan.runs(Case::Queue) {
        for &clients in &plan.clients {
            tracing::info!(backend = %kind, clients, "queue");
            report
                .queue
                .push(queue::run(target, run_id, clients, plan).await);
        }
    }
    if plan.runs(Case::Stm) {
        for &workers in &plan.clients {
            tracing::info!(backend = %kind, workers, "stm");
            report
                .stm
                .push(stm::run(target, run_id, workers, plan).await);
        }
    }
    if plan.runs(Case::Scale) {
        tracing::info!(
            backend = %kind,
            sizes = ?plan.scale_sizes,
            waiting = plan.scale_waiting,
            "scale"
        );
        report.scale = Some(crate::scale::isolated::run(target, run_id, plan).await);
    }
    if plan.runs(Case::Aggregate) {
        tracing::info!(backend = %kind, clients = plan.aggregate_clients, "aggregate");
        report.aggregate = Some(crate::aggregate::run(target, run_id, plan).await);
    }
    if plan.runs(Case::Residue) {
        tracing::info!(backend = %kind, names = plan.residue_names, "residue");
        report.residue = Some(crate::residue::run(target, run_id, plan).await);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_backend_without_url_or_feature_is_skipped_with_the_reason() {
        let args = Args::parse_from(["distsync-bench", "--backends", "postgres,memory,etcd"]);
        let selected = selected(&Args {
            etcd_url: None,
            ..args
        });
        assert_eq!(selected[0], (BackendKind::Memory, Ok("memory://".into())));
        let (kind, etcd) = &selected[1];
        assert_eq!(*kind, BackendKind::Etcd);
        let reason = etcd.as_ref().unwrap_err();
        if cfg!(feature = "etcd") {
            assert!(reason.contains("DISTSYNC_ETCD_URL"), "{reason}");
        } else {
            assert!(reason.contains("--features etcd"), "{reason}");
        }
        assert_eq!(selected[2].0, BackendKind::Postgres);
    }
}
