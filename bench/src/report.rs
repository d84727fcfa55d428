//! The tables of a run: the machine and counts, the targets with their verdicts, and
//! one table per case. Each is a named section that [`crate::markdown::splice`]
//! writes between its markers in `docs/BENCHMARKS.md`; the prose around them is
//! the document's own.

use std::time::Duration;

use crate::aggregate::{AggregateResult, Throughput, AGGREGATE_TARGET};
use crate::contender::{CycleResult, Role};
use crate::handoff::HandoffResult;
use crate::markdown::Table;
use crate::run::{BackendReport, Report};
use crate::scale::ScaleResult;
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, ratio, Summary};
use crate::target::BackendKind;

/// The library overhead target: distsync's cycle p50 at most this times the raw one.
pub const OVERHEAD_TARGET: f64 = 1.10;
/// The herd target: a hand-off figure at the most waiters at most this times at 1.
pub const HERD_TARGET: f64 = 2.0;
/// PostgreSQL with its production settings (fsync and synchronous_commit on): the lock
/// cycle's p50 at most this times the raw advisory lock pair's.
pub const DURABLE_POSTGRES_TARGET: f64 = 1.3;
/// At scale: the most store connections 10,000 holds and 1,000 waiters may use.
pub const SCALE_CONNECTIONS_TARGET: i64 = 32;

/// The hand-off latency target: p50 with one waiter at most this, per backend (none
/// for the in-process memory store).
pub fn handoff_p50_target(kind: BackendKind) -> Option<Duration> {
    match kind {
        BackendKind::Etcd => Some(Duration::from_millis(2)),
        BackendKind::Redis | BackendKind::Postgres => Some(Duration::from_micros(400)),
        BackendKind::Memory => None,
    }
}

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
        ("targets", "Targets", measured(targets(report))),
        ("cycle", "Uncontended lock+unlock cycle", measured(cycle(report))),
        ("handoff", "Contended hand-off", measured(handoff(report))),
        ("election", "Election", measured(election(report))),
        ("queue", "Queue", measured(queue(report))),
        ("stm", "STM", measured(stm(report))),
        ("scale", "At scale", measured(scale(report))),
        ("scale-steps", "Cost against the number of holds", measured(scale_steps(report))),
        ("scale-handoff", "Hand-off with the holds held", measured(scale_handoff(report))),
        ("aggregate", "Many clients, each its own lock", measured(aggregate(report))),
    ]
}

/// Every section with its title as a heading (for standard output).
pub fn text(report: &Report) -> String {
    sections(report)
        .into_iter()
        .map(|(_, title, body)| format!("## {title}\n\n{body}\n"))
        .collect()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
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
    fact("command", Some(format!("`distsync-bench {}`", report.arguments.join(" "))));
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
    fact("load average (1/5/15 min) at start", machine.load_start.clone());
    fact("load average at end", machine.load_end.clone());
    fact("wall time of the run", Some(format!("{:.0} s", report.elapsed.as_secs_f64())));
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

fn targets(report: &Report) -> Table {
    let mut table = Table::new(&["target", "backend", "measured", "verdict"]);
    for backend in &report.backends {
        cycle_targets(&mut table, backend);
    }
    for backend in &report.backends {
        if let Some(scale) = &backend.scale {
            scale_target(&mut table, backend.kind, scale);
        }
    }
    for backend in &report.backends {
        handoff_targets(&mut table, backend);
    }
    for backend in &report.backends {
        peer_target(&mut table, backend);
    }
    for backend in &report.backends {
        if let Some(aggregate) = &backend.aggregate {
            aggregate_target(&mut table, backend.kind, aggregate);
        }
    }
    table
}

/// The library's overhead over the raw sequence, and on a durable PostgreSQL the
/// cycle against the advisory lock pair.
fn cycle_targets(table: &mut Table, backend: &BackendReport) {
    let library = p50(backend.cycle_row(Role::Library));
    let raw = p50(backend.cycle_row(Role::Raw));
    let (Some(library), Some(raw)) = (library, raw) else {
        return;
    };
    let factor = ratio(library, raw).unwrap_or(f64::INFINITY);
    let figures = format!("{} vs {} raw", fmt_duration(library), fmt_duration(raw));
    table.row([
        "library overhead ≤ 10% over the raw sequence (cycle p50)".to_owned(),
        backend.kind.to_string(),
        format!("{figures}: {:+.0}%", (factor - 1.0) * 100.0),
        verdict(factor <= OVERHEAD_TARGET).to_owned(),
    ]);
    let durable = backend
        .server
        .as_deref()
        .is_some_and(|server| server.contains("fsync = on"));
    if backend.kind == BackendKind::Postgres && durable {
        table.row([
            format!(
                "lock cycle ≤ {DURABLE_POSTGRES_TARGET}× the raw pg_advisory_lock + unlock \
                 pair, fsync and synchronous_commit on (cycle p50)"
            ),
            backend.kind.to_string(),
            format!("{figures}: ×{factor:.2}"),
            verdict(factor <= DURABLE_POSTGRES_TARGET).to_owned(),
        ]);
    }
}

fn scale_target(table: &mut Table, kind: BackendKind, scale: &ScaleResult) {
    let peak = [scale.connections_peak, scale.connections_handoff]
        .into_iter()
        .flatten()
        .max();
    let Some(peak) = peak else {
        return;
    };
    let limit = scale
        .max_connections
        .map_or(String::new(), |max| format!(" (max_connections {max})"));
    table.row([
        format!(
            "{} locks held and {} waiting from one process with ≤ {SCALE_CONNECTIONS_TARGET} \
             connections",
            scale.holds, scale.waiting
        ),
        kind.to_string(),
        format!("{peak} connections at most{limit}"),
        verdict(peak <= SCALE_CONNECTIONS_TARGET).to_owned(),
    ]);
}

/// No herd (p50 and p99 at the most waiters within [`HERD_TARGET`] of one waiter's),
/// and the backend's p50 target with one waiter.
fn handoff_targets(table: &mut Table, backend: &BackendReport) {
    let kind = backend.kind;
    let measured = summaries(&backend.handoff);
    let (Some((low, base)), Some((high, top))) = (measured.first(), measured.last()) else {
        return;
    };
    if high > low {
        let factor = ratio(top.p50, base.p50).unwrap_or(f64::INFINITY);
        table.row([
            format!("hand-off p50 at {high} waiters ≤ {HERD_TARGET}× at {low} (no herd)"),
            kind.to_string(),
            format!(
                "{} at {high} waiters vs {} at {low}: ×{factor:.2}",
                fmt_duration(top.p50),
                fmt_duration(base.p50)
            ),
            verdict(factor <= HERD_TARGET).to_owned(),
        ]);
    }
    if let (Some(target), 1) = (handoff_p50_target(kind), *low) {
        table.row([
            format!("hand-off p50 with one waiter ≤ {}", fmt_duration(target)),
            kind.to_string(),
            fmt_duration(base.p50),
            verdict(base.p50 <= target).to_owned(),
        ]);
    }
    if *low == 1 && *high > 1 {
        let factor = ratio(top.p99, base.p99).unwrap_or(f64::INFINITY);
        table.row([
            format!("hand-off p99 at {high} waiters ≤ {HERD_TARGET}× p99 at one"),
            kind.to_string(),
            format!(
                "{} vs {}: ×{factor:.2}",
                fmt_duration(top.p99),
                fmt_duration(base.p99)
            ),
            verdict(factor <= HERD_TARGET).to_owned(),
        ]);
    }
}

fn peer_target(table: &mut Table, backend: &BackendReport) {
    let Some(library) = p50(backend.cycle_row(Role::Library)) else {
        return;
    };
    let peers: Vec<&CycleResult> = backend
        .cycle
        .iter()
        .filter(|row| row.role == Role::Peer)
        .collect();
    if peers.is_empty() {
        return;
    }
    let mut figures = Vec::new();
    let mut slower_than = Vec::new();
    for peer in peers {
        match p50(Some(peer)) {
            Some(theirs) => {
                figures.push(format!("{}: {}", peer.label, fmt_ratio(theirs, library)));
                if theirs < library {
                    slower_than.push(peer.label.clone());
                }
            }
            None => figures.push(format!("{}: not measured", peer.label)),
        }
    }
    table.row([
        "at least as fast as every peer (cycle p50, peer ÷ distsync)".to_owned(),
        backend.kind.to_string(),
        figures.join("; "),
        if slower_than.is_empty() {
            verdict(true).to_owned()
        } else {
            format!("**missed**: slower than {}", slower_than.join(", "))
        },
    ]);
}

fn aggregate_target(table: &mut Table, kind: BackendKind, aggregate: &AggregateResult) {
    let (Some(library), Some(raw)) = (&aggregate.library, &aggregate.raw) else {
        return;
    };
    let measured = format!(
        "{} vs {} cycles/s raw",
        fmt_rate(library.rate()),
        fmt_rate(raw.rate())
    );
    let (measured, result) = match aggregate.ratio() {
        Some(factor) => (
            format!("{measured}: ×{factor:.2}"),
            verdict(factor >= AGGREGATE_TARGET),
        ),
        None => (measured, "not measured"),
    };
    table.row([
        format!(
            "{} clients each cycling its own lock: aggregate ≥ {AGGREGATE_TARGET}× as many raw \
             clients",
            aggregate.clients
        ),
        kind.to_string(),
        measured,
        result.to_owned(),
    ]);
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
            for (phase, samples) in &row.phases {
                if let Some(phase) = samples.summary().map(|summary| (phase, summary)) {
                    table.row([
                        kind.to_string(),
                        format!("&nbsp;&nbsp;↳ {}", phase.0),
                        phase.1.count.to_string(),
                        fmt_duration(phase.1.p50),
                        fmt_duration(phase.1.p99),
                    ]);
                }
            }
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
    let mut table = Table::new(&["backend", ">waiters", ">hand-offs", ">p50", ">p99", ">p50 ÷ p50 at 1"]);
    for backend in &report.backends {
        let base = summaries(&backend.handoff).first().map(|(_, summary)| summary.p50);
        for result in &backend.handoff {
            let summary = result.samples.summary();
            table.row([
                backend.kind.to_string(),
                result.waiters.to_string(),
                dash(summary.map(|summary| summary.count.to_string())),
                dash(summary.map(|summary| fmt_duration(summary.p50))),
                dash(summary.map(|summary| fmt_duration(summary.p99))),
                dash(summary.zip(base).map(|(summary, base)| fmt_ratio(summary.p50, base))),
            ]);
            if let Some(error) = &result.error {
                table.note(format!("{} with {} waiters: {error}", backend.kind, result.waiters));
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
    let mut table = Table::new(&["backend", ">clients", ">items", ">enqueue items/s", ">dequeue items/s"]);
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
                table.note(format!("{} with {} clients: {error}", backend.kind, result.clients));
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
                table.note(format!("{} with {} workers: {error}", backend.kind, result.workers));
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
            format!("{} → {}", megabytes(scale.rss_before_kb), megabytes(scale.rss_peak_kb)),
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
        dash(low.zip(high).map(|(low, high)| format!("×{low:.2} – ×{high:.2}"))),
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
            (aggregate.diagnostic.as_ref(), "one connection (client) each"),
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
