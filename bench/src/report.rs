//! The tables of a run: the machine and counts, and one table per case. Each is a
//! named section that [`crate::markdown::splice`] writes between its markers in
//! `docs/BENCHMARKS.md`; the prose around them is the document's own.

use crate::aggregate::Throughput;
use crate::contender::Role;
use crate::markdown::Table;
use crate::run::Report;
use crate::scale::ScaleResult;
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, Samples};
use crate::target::BackendKind;

/// The sections that are one table each: marker name, title and the table's maker.
type Tables = [(&'static str, &'static str, fn(&Report) -> Table); 9];

/// Every section of the report: its marker name, its title and its text.
pub fn sections(report: &Report) -> Vec<(&'static str, &'static str, String)> {
    let tables: Tables = [
        ("cycle", "Uncontended lock+unlock cycle", cycle),
        ("handoff", "Contended hand-off", handoff),
        ("election", "Election", election),
        ("queue", "Queue", queue),
        ("stm", "STM", stm),
        ("scale", "At scale", scale),
        (
            "scale-steps",
            "Cost against the number of holds",
            scale_steps,
        ),
        (
            "scale-handoff",
            "Hand-off with the holds held",
            scale_handoff,
        ),
        ("aggregate", "Many clients, each its own lock", aggregate),
    ];
    let mut sections = vec![("run", "Machine and run", run_table(report))];
    for (name, title, table) in tables {
        let table = table(report);
        let body = if table.is_empty() {
            "_Not measured in this run._\n".to_owned()
        } else {
            table.render()
        };
        sections.push((name, title, body));
    }
    sections
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

fn dashes<const N: usize>() -> [String; N] {
    std::array::from_fn(|_| "—".into())
}

/// The count, p50 and p99 of `samples`, or dashes without samples.
fn latencies(samples: &Samples) -> [String; 3] {
    match samples.summary() {
        Some(summary) => [
            summary.count.to_string(),
            fmt_duration(summary.p50),
            fmt_duration(summary.p99),
        ],
        None => dashes(),
    }
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
    let command = format!("`distsync-bench {}`", report.arguments.join(" "));
    fact("command", Some(command));
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
    let load = machine.load_start.clone();
    fact("load average (1/5/15 min) at start", load);
    fact("load average at end", machine.load_end.clone());
    let wall = format!("{:.0} s", report.elapsed.as_secs_f64());
    fact("wall time of the run", Some(wall));
    let counts = format!(
        "cycle: {} cycles per implementation after {} warm-up, in {} interleaved rounds; \
         hand-off: {} per waiter count, a holder waits {} ms; election: {} leader changes; \
         queue: {} items, STM: {} transfers per client count; scale: {} holds, {} waiting, \
         TTL {} s; many clients: {} per side, {} rounds of {} ms; every measurement capped \
         at {} s",
        plan.cycles,
        plan.warmup,
        plan.rounds,
        plan.handoffs,
        plan.settle.as_millis(),
        plan.elections,
        plan.queue_items,
        plan.stm_transfers,
        plan.scale_holds.unwrap_or_default(),
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
        let p50 = |role| Some(backend.cycle_row(role)?.samples.summary()?.p50);
        let (library, raw) = (p50(Role::Library), p50(Role::Raw));
        for row in &backend.cycle {
            let label = match row.role {
                Role::Library => format!("**{}**", row.label),
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
            let versus = |base: Option<_>| dash(base.map(|base| fmt_ratio(summary.p50, base)));
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
            table.error(format!("{kind} / {}: stopped early", row.label), &row.error);
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
        // distsync's rows first, then each peer's (measured beside them, waiter count
        // by waiter count); each compared with its own figure at the fewest waiters.
        let mut implementations: Vec<Option<&str>> = Vec::new();
        for result in &backend.handoff {
            if !implementations.contains(&result.peer.as_deref()) {
                implementations.push(result.peer.as_deref());
            }
        }
        for implementation in implementations {
            let results: Vec<_> = backend
                .handoff
                .iter()
                .filter(|result| result.peer.as_deref() == implementation)
                .collect();
            let p50s: Vec<_> = results
                .iter()
                .map(|result| Some(result.samples.summary()?.p50))
                .collect();
            let base = p50s.iter().flatten().next().copied();
            let row = match implementation {
                Some(peer) => format!("{}: {peer}", backend.kind),
                None => backend.kind.to_string(),
            };
            for (result, p50) in results.into_iter().zip(p50s) {
                let versus = p50.zip(base).map(|(p50, base)| fmt_ratio(p50, base));
                let [count, p50, p99] = latencies(&result.samples);
                let waiters = result.waiters.to_string();
                table.row([row.clone(), waiters, count, p50, p99, dash(versus)]);
                let what = format!("{row} with {} waiters", result.waiters);
                table.error(what, &result.error);
            }
        }
    }
    table
}

fn election(report: &Report) -> Table {
    let mut table = Table::new(&["backend", ">leader changes", ">p50", ">p99"]);
    for backend in &report.backends {
        if let Some(result) = &backend.election {
            let kind = backend.kind.to_string();
            table.row([kind.clone()].into_iter().chain(latencies(&result.samples)));
            table.error(kind, &result.error);
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
            let what = format!("{} with {} clients", backend.kind, result.clients);
            table.error(what, &result.error);
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
            let what = format!("{} with {} workers", backend.kind, result.workers);
            table.error(what, &result.error);
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
        let (before, peak) = (scale.connections_before, scale.connections_peak);
        let handoff = scale.connections_handoff;
        table.row([
            kind.to_string(),
            largest.map_or(0, |point| point.holds).to_string(),
            scale.waiting.to_string(),
            format!("{} / {} / {}", count(before), count(peak), count(handoff)),
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
        table.error(format!("{kind}: stopped early"), &scale.error);
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
            let (open, acquire) = (point.open_sessions, point.acquire_all);
            table.row([
                kind.to_string(),
                point.holds.to_string(),
                format!(
                    "{} ({})",
                    fmt_duration(open),
                    fmt_duration(point.open_per_session())
                ),
                format!(
                    "{} ({})",
                    fmt_duration(acquire),
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
            let head = [kind.to_string(), result.waiters.to_string()];
            table.row(head.into_iter().chain(latencies(&result.samples)));
            let what = format!("{kind} with {} waiters", result.waiters);
            table.error(what, &result.error);
        }
    }
    table
}

/// distsync's rate over `raw`'s, and the lowest and highest ratio of one round.
fn versus(library: &Throughput, raw: &Throughput) -> [String; 2] {
    if raw.rate() <= 0.0 {
        return dashes();
    }
    let rounds = library.round_rates.iter().zip(&raw.round_rates);
    let ratios = rounds
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs);
    let range = ratios.fold(None, |range: Option<(f64, f64)>, ratio| {
        let (low, high) = range.unwrap_or((ratio, ratio));
        Some((low.min(ratio), high.max(ratio)))
    });
    [
        format!("×{:.2}", library.rate() / raw.rate()),
        dash(range.map(|(low, high)| format!("×{low:.2} – ×{high:.2}"))),
    ]
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
        let mut side_row = |side: &Throughput, label, [ratio, range]: [String; 2], setup| {
            table.row([
                kind.to_string(),
                label,
                side.clients.to_string(),
                side.cycles.to_string(),
                fmt_rate(side.rate()),
                ratio,
                range,
                String::from(setup),
            ]);
            table.error(format!("{kind} / {}", side.label), &side.error);
        };
        if let Some(library) = library {
            let label = format!("**{}**", library.label);
            side_row(library, label, dashes(), aggregate.setup.as_str());
        }
        if let Some(raw) = &aggregate.raw {
            let ratios = library.map_or_else(dashes, |library| versus(library, raw));
            side_row(
                raw,
                raw.label.clone(),
                ratios,
                "one connection (client) each",
            );
        }
        table.error(kind, &aggregate.error);
    }
    table
}
