//! The tables of a run: the machine and counts, and one table per case. Each is a
//! named section that [`crate::markdown::splice`] writes between its markers in
//! `docs/BENCHMARKS.md`; the prose around them is the document's own.

use std::time::Duration;

use crate::aggregate::Throughput;
use crate::contender::{CycleResult, Role};
use crate::handoff::HandoffResult;
use crate::markdown::Table;
use crate::run::Report;
use crate::scale::ScaleResult;
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, Summary};
use crate::target::BackendKind;

/// Every section of the report: its marker name, its title and its text.
pub fn sections(report: &Report) -> Vec<(&'static str, &'static str, String)> {
    let measured = |table: Table| {
        if table.is_empty() {
            "_Not measured in this run._\n".to_owned()
        } else {
            table.render()
        }
    };
    vec![
        ("run", "Machine and run", run_table(report)),
        (
            "cycle",
            "Uncontended lock+unlock cycle",
            measured(cycle(report)),
        ),
        ("handoff", "Contended hand-off", measured(handoff(report))),
        ("election", "Election", measured(election(report))),
        ("queue", "Queue", measured(queue(report))),
        ("stm", "STM", measured(stm(report))),
        ("scale", "At scale", measured(scale(report))),
        (
            "scale-steps",
            "Cost against the number of holds",
            measured(scale_steps(report)),
        ),
        (
            "scale-handoff",
            "Hand-off with the holds held",
            measured(scale_handoff(report)),
        ),
        (
            "aggregate",
            "Many clients, each its own lock",
            measured(aggregate(report)),
        ),
    ]
}

/// Every section with its title as a heading (for standard output).
pub fn text(report: &Report) -> String {
    sections(report)
        .into_iter()
        .map(|(_, title, body)| format!("## {title}\n\n{body}\n"))
        .collect()
}

fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "—".into())
}

fn p50(row: Option<&CycleResult>) -> Option<Duration> {
    Some(row?.samples.summary()?.p50)
}

fn summaries(handoffs: &[HandoffResult]) -> Vec<(usize, Summary)> {
    handoffs
        .iter()
        .filter_map(|result| Some((result.waiters, result.samples.summary()?)))
        .collect()
}

fn run_table(report: &Report) -> String {
    let (machine, plan) = (&report.machine, &report.plan);
    let mut table = Table::new(&["", ""]);
    let mut fact = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            table.row([name.to_owned(), value]);
        }
    };
    fact("date", Some(machine.started.clone()));
    fact(
        "command",
        Some(format!("`distsync-bench {}`", report.arguments.join(" "))),
    );
    fact("CPUs (nproc)", Some(machine.cpus.to_string()));
    fact("CPU", machine.cpu_model.clone());
    fact("memory", machine.memory.clone());
    fact("OS", machine.os.clone());
    fact("kernel", machine.kernel.clone());
    fact("rustc", machine.rustc.clone());
    fact("commit", machine.commit.clone());
    for backend in &report.backends {
        let server = match &backend.server {
            Some(version) => format!("{version} at `{}`", backend.url),
            None => format!("`{}`", backend.url),
        };
        fact(&format!("{} server", backend.kind), Some(server));
    }
    fact("etcdctl", report.etcdctl.clone());
    fact(
        "load average (1/5/15 min) at start",
        machine.load_start.clone(),
    );
    fact("load average at end", machine.load_end.clone());
    fact(
        "wall time of the run",
        Some(format!("{:.0} s", report.elapsed.as_secs_f64())),
    );
    let counts = format!(
        "cycle: {} cycles per implementation after {} warm-up (process-spawning rows a \
         tenth), in {} interleaved rounds; hand-off: {} per waiter count, a holder waits \
         {} ms; election: {} leader changes; queue: {} items, STM: {} transfers per client \
         count; scale: {} holds, {} waiting, TTL {} s; many clients: {} per side, {} rounds \
         of {} ms; every measurement capped at {} s",
        plan.cycles,
        plan.warmup,
        plan.rounds,
        plan.handoffs,
        plan.settle.as_millis(),
        plan.elections,
        plan.queue_items,
        plan.stm_transfers,
        plan.scale_holds,
        plan.scale_waiting,
        plan.scale_ttl.as_secs(),
        plan.aggregate_clients,
        plan.aggregate_rounds,
        (plan.aggregate_time / u32::try_from(plan.aggregate_rounds).unwrap_or(1)).as_millis(),
        plan.case_time.as_secs(),
    );
    fact("counts", Some(counts));
    for (kind, reason) in &report.skipped {
        table.note(format!("**{kind}: not measured**: {reason}"));
    }
    table.render()
}

fn cycle(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        "implementation",
        ">cycles",
        ">p50",
        ">p99",
        ">ops/s",
        ">vs raw",
        ">vs distsync",
    ]);
    for backend in &report.backends {
        let kind = backend.kind;
        let library = p50(backend.cycle_row(Role::Library));
        let raw = p50(backend.cycle_row(Role::Raw));
        for row in &backend.cycle {
            let label = match row.role {
                Role::Library => format!("**{}**", row.label),
                Role::Baseline | Role::Diagnostic => format!("_{}_", row.label),
                Role::Raw | Role::Peer => row.label.clone(),
            };
            let Some(summary) = row.samples.summary() else {
                let mut cells = vec![kind.to_string(), label];
                cells.resize(8, "—".to_owned());
                table.row(cells);
                let reason = row.error.as_deref().unwrap_or("no samples");
                table.note(format!("{kind} / {}: not measured: {reason}", row.label));
                continue;
            };
            let versus = |base: Option<Duration>| match base {
                Some(base) if row.role != Role::Baseline => fmt_ratio(summary.p50, base),
                _ => "—".into(),
            };
            table.row([
                kind.to_string(),
                label,
                summary.count.to_string(),
                fmt_duration(summary.p50),
                fmt_duration(summary.p99),
                fmt_rate(summary.ops_per_sec),
                versus(raw),
                versus(library),
            ]);
            if let Some(error) = &row.error {
                table.note(format!("{kind} / {}: stopped early: {error}", row.label));
            }
        }
        if kind == BackendKind::Memory && !backend.cycle.is_empty() {
            table.note("memory: no raw sequence (no client crate beneath the in-process store)");
        }
    }
    table
}

fn handoff(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">waiters",
        ">hand-offs",
        ">p50",
        ">p99",
        ">p50 ÷ p50 at 1",
    ]);
    for backend in &report.backends {
        let base = summaries(&backend.handoff)
            .first()
            .map(|(_, summary)| summary.p50);
        for result in &backend.handoff {
            let summary = result.samples.summary();
            table.row([
                backend.kind.to_string(),
                result.waiters.to_string(),
                dash(summary.map(|summary| summary.count.to_string())),
                dash(summary.map(|summary| fmt_duration(summary.p50))),
                dash(summary.map(|summary| fmt_duration(summary.p99))),
                dash(
                    summary
                        .zip(base)
                        .map(|(summary, base)| fmt_ratio(summary.p50, base)),
                ),
            ]);
            if let Some(error) = &result.error {
                table.note(format!(
                    "{} with {} waiters: {error}",
                    backend.kind, result.waiters
                ));
            }
        }
    }
    table
}

fn election(report: &Report) -> Table {
    let mut table = Table::new(&["backend", ">leader changes", ">p50", ">p99"]);
    for backend in &report.backends {
        let Some(result) = &backend.election else {
            continue;
        };
        let summary = result.samples.summary();
        table.row([
            backend.kind.to_string(),
            dash(summary.map(|summary| summary.count.to_string())),
            dash(summary.map(|summary| fmt_duration(summary.p50))),
            dash(summary.map(|summary| fmt_duration(summary.p99))),
        ]);
        if let Some(error) = &result.error {
            table.note(format!("{}: {error}", backend.kind));
        }
    }
    table
}

fn queue(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">clients",
        ">items",
        ">enqueue items/s",
        ">dequeue items/s",
    ]);
    for backend in &report.backends {
        for result in &backend.queue {
            table.row([
                backend.kind.to_string(),
                result.clients.to_string(),
                format!("{} / {}", result.enqueued.0, result.dequeued.0),
                fmt_rate(result.enqueue_rate()),
                fmt_rate(result.dequeue_rate()),
            ]);
            if let Some(error) = &result.error {
                table.note(format!(
                    "{} with {} clients: {error}",
                    backend.kind, result.clients
                ));
            }
        }
    }
    table
}

fn stm(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">workers",
        "isolation",
        ">transfers",
        ">transfers/s",
        ">retries per commit",
    ]);
    for backend in &report.backends {
        for result in &backend.stm {
            table.row([
                backend.kind.to_string(),
                result.workers.to_string(),
                dash(result.isolation.map(|level| level.to_string())),
                result.commits.to_string(),
                fmt_rate(result.rate()),
                format!("{:.2}", result.retries_per_commit()),
            ]);
            if let Some(error) = &result.error {
                table.note(format!(
                    "{} with {} workers: {error}",
                    backend.kind, result.workers
                ));
            }
        }
    }
    table
}

fn scaled(report: &Report) -> impl Iterator<Item = (BackendKind, &ScaleResult)> {
    report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.scale.as_ref()?)))
}

fn megabytes(kb: Option<u64>) -> String {
    dash(kb.map(|kb| format!("{:.1} MB", kb as f64 / 1024.0)))
}

fn count(value: Option<i64>) -> String {
    dash(value.map(|value| value.to_string()))
}

fn scale(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">held",
        ">waiting",
        "store connections before / held and waiting / during hand-offs",
        "client RSS before → held and waiting",
        ">open sessions",
        ">acquire all",
        ">keepalive requests/s, all held",
        ">release to all waiters holding",
    ]);
    for (kind, scale) in scaled(report) {
        let largest = scale.largest();
        table.row([
            kind.to_string(),
            largest.map_or(0, |point| point.holds).to_string(),
            scale.waiting.to_string(),
            format!(
                "{} / {} / {}",
                count(scale.connections_before),
                count(scale.connections_peak),
                count(scale.connections_handoff)
            ),
            format!(
                "{} → {}",
                megabytes(scale.rss_before_kb),
                megabytes(scale.rss_peak_kb)
            ),
            dash(scale.open_sessions.map(fmt_duration)),
            dash(scale.acquire_all.map(fmt_duration)),
            dash(largest.and_then(|point| Some(fmt_rate(point.keepalive?.per_sec())))),
            dash(scale.release_to_waiters.map(fmt_duration)),
        ]);
        if let Some(max) = scale.max_connections {
            table.note(format!("{kind}: the server's max_connections is {max}"));
        }
        if let Some(error) = &scale.error {
            table.note(format!("{kind}: stopped early: {error}"));
        }
    }
    table
}

fn scale_steps(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">holds",
        ">open sessions (per session)",
        ">acquire all (per hold)",
        ">client RSS (per hold)",
        ">store connections",
        ">keepalive requests/s (per session per renewal interval)",
    ]);
    for (kind, scale) in scaled(report) {
        for point in &scale.sizes {
            let per_hold = point.rss_per_hold_kb(scale.rss_connected_kb);
            let keepalive = point
                .keepalive
                .zip(point.keepalive_per_session(scale.renewal_interval()))
                .map(|(requests, per)| format!("{} ({per:.2})", fmt_rate(requests.per_sec())));
            table.row([
                kind.to_string(),
                point.holds.to_string(),
                format!(
                    "{} ({})",
                    fmt_duration(point.open_sessions),
                    fmt_duration(point.open_per_session())
                ),
                format!(
                    "{} ({})",
                    fmt_duration(point.acquire_all),
                    fmt_duration(point.acquire_per_hold())
                ),
                format!(
                    "{} ({})",
                    megabytes(point.rss_kb),
                    dash(per_hold.map(|kb| format!("{kb:.2} kB")))
                ),
                count(point.connections),
                dash(keepalive),
            ]);
        }
    }
    table
}

fn scale_handoff(report: &Report) -> Table {
    let mut table = Table::new(&["backend", ">waiters", ">hand-offs", ">p50", ">p99"]);
    for (kind, scale) in scaled(report) {
        for result in &scale.handoff {
            let summary = result.samples.summary();
            table.row([
                kind.to_string(),
                result.waiters.to_string(),
                dash(summary.map(|summary| summary.count.to_string())),
                dash(summary.map(|summary| fmt_duration(summary.p50))),
                dash(summary.map(|summary| fmt_duration(summary.p99))),
            ]);
            if let Some(error) = &result.error {
                table.note(format!("{kind} with {} waiters: {error}", result.waiters));
            }
        }
    }
    table
}

/// distsync's rate over `side`'s, and the lowest and highest ratio of one round.
fn versus(library: Option<&Throughput>, side: &Throughput) -> (String, String) {
    let Some(library) = library.filter(|_| side.rate() > 0.0) else {
        return ("—".into(), "—".into());
    };
    let rounds: Vec<f64> = library
        .round_rates
        .iter()
        .zip(&side.round_rates)
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    let low = rounds.iter().copied().reduce(f64::min);
    let high = rounds.iter().copied().reduce(f64::max);
    (
        format!("×{:.2}", library.rate() / side.rate()),
        dash(
            low.zip(high)
                .map(|(low, high)| format!("×{low:.2} – ×{high:.2}")),
        ),
    )
}

fn aggregate(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        "side",
        ">clients",
        ">cycles",
        ">cycles/s",
        ">distsync ÷ side",
        "per-round range",
        "setup",
    ]);
    for backend in &report.backends {
        let (kind, Some(aggregate)) = (backend.kind, &backend.aggregate) else {
            continue;
        };
        let library = aggregate.library.as_ref();
        let sides = [
            (library, aggregate.setup.as_str()),
            (aggregate.raw.as_ref(), "one connection (client) each"),
            (
                aggregate.diagnostic.as_ref(),
                "one connection (client) each",
            ),
        ];
        for (index, (side, setup)) in sides.into_iter().enumerate() {
            let Some(side) = side else {
                continue;
            };
            let (label, (ratio, range)) = match index {
                0 => (format!("**{}**", side.label), ("—".into(), "—".into())),
                1 => (side.label.clone(), versus(library, side)),
                _ => (format!("_{}_", side.label), versus(library, side)),
            };
            table.row([
                kind.to_string(),
                label,
                side.clients.to_string(),
                side.cycles.to_string(),
                fmt_rate(side.rate()),
                ratio,
                range,
                setup.to_owned(),
            ]);
            if let Some(error) = &side.error {
                table.note(format!("{kind} / {}: {error}", side.label));
            }
        }
        for note in aggregate.notes.iter().chain(&aggregate.error) {
            table.note(format!("{kind}: {note}"));
        }
    }
    table
}
