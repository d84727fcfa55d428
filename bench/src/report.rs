//! The tables of a run: the machine and counts, and one table per case. Each is a
//! named section that [`crate::markdown::splice`] writes between its markers in
//! `docs/BENCHMARKS.md`; the prose around them is the document's own.

use distsync::lock::Fairness;

use crate::aggregate::{AggregateResult, Throughput};
use crate::contended::ContendedResult;
use crate::contender::{CycleResult, Role};
use crate::handoff::HandoffResult;
use crate::markdown::Table;
use crate::run::{BackendReport, Report};
use crate::scale::ScaleResult;
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, Samples};
use crate::target::BackendKind;

/// The sections that are one table each: marker name, title and the table's maker.
type Tables = [(&'static str, &'static str, fn(&Report) -> Table); 11];

/// Every section of the report: its marker name, its title and its text.
pub fn sections(report: &Report) -> Vec<(&'static str, &'static str, String)> {
    sections_with(report, &[])
}

/// [`sections`], each followed by a link to the plots `drawn` beside it (the plots
/// sit in `bench/`, beside the file the sections are written into).
pub fn sections_with(
    report: &Report,
    drawn: &[crate::plot::Drawn],
) -> Vec<(&'static str, &'static str, String)> {
    let tables: Tables = [
        ("targets", "Targets by guarantee class", targets),
        ("cycle", "Uncontended lock+unlock cycle", cycle),
        ("handoff", "Contended hand-off", handoff),
        ("contended", "Contended throughput", contended),
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
        let mut body = if table.is_empty() {
            "_Not measured in this run._\n".to_owned()
        } else {
            table.render()
        };
        for plot in drawn.iter().filter(|plot| plot.section == name) {
            body.push_str(&format!("\n![{}](bench/{})\n", plot.alt, plot.file));
        }
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
         hand-off: {} per waiter count, a holder waits {} ms; contended: {} clients, {} ms \
         per implementation and count; election: {} leader changes; \
         queue: {} items, STM: {} transfers per client count; scale: {} holds, {} waiting, \
         TTL {} s; many clients: {} per side, {} rounds of {} ms; every measurement capped \
         at {} s",
        plan.cycles,
        plan.warmup,
        plan.rounds,
        plan.handoffs,
        plan.settle.as_millis(),
        plan.contended_clients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.contended_time.as_millis(),
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
        ">vs unfair",
    ]);
    for backend in &report.backends {
        let kind = backend.kind;
        let p50 = |role| Some(backend.cycle_row(role)?.samples.summary()?.p50);
        let (library, unfair, raw) = (p50(Role::Library), p50(Role::Unfair), p50(Role::Raw));
        for row in &backend.cycle {
            let label = match row.role {
                Role::Library | Role::Unfair => format!("**{}**", row.label),
                Role::Raw | Role::Peer => row.label.clone(),
            };
            let Some(summary) = row.samples.summary() else {
                let mut cells = vec![kind.to_string(), label];
                if row.unsupported {
                    cells.push("unsupported".to_owned());
                }
                cells.resize(9, "—".to_owned());
                table.row(cells);
                let reason = row.error.as_deref().unwrap_or("no samples");
                if row.unsupported {
                    table.note(format!("{kind} / {}: unsupported: {reason}", row.label));
                } else {
                    table.note(format!("{kind} / {}: not measured: {reason}", row.label));
                }
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
                versus(unfair),
            ]);
            table.error(format!("{kind} / {}: stopped early", row.label), &row.error);
        }
        if kind == BackendKind::Memory && !backend.cycle.is_empty() {
            table.note("memory: no raw sequence (no client crate beneath the in-process store)");
        }
    }
    table
}

/// The row label of hand-off `result` on `kind`: the backend for distsync's fair lock,
/// with the lock or the peer otherwise.
fn handoff_row(kind: BackendKind, result: &HandoffResult) -> String {
    match (&result.peer, result.unfair) {
        (Some(peer), _) => format!("{kind}: {peer}"),
        (None, true) => format!("{kind}: {}", crate::cycle::UNFAIR_LABEL),
        (None, false) => kind.to_string(),
    }
}

fn handoff(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        ">waiters",
        ">hand-offs",
        ">p50",
        ">p99",
        ">p50 ÷ p50 at 1",
        ">wake-ups per release",
    ]);
    for backend in &report.backends {
        // distsync's rows first (the fair lock, then the unfair one), then each peer's
        // (measured beside them, waiter count by waiter count); each compared with its
        // own figure at the fewest waiters.
        let mut implementations: Vec<String> = Vec::new();
        for result in &backend.handoff {
            let row = handoff_row(backend.kind, result);
            if !implementations.contains(&row) {
                implementations.push(row);
            }
        }
        for row in implementations {
            let results: Vec<_> = backend
                .handoff
                .iter()
                .filter(|result| handoff_row(backend.kind, result) == row)
                .collect();
            if results.iter().all(|result| result.unsupported) {
                let waiters: Vec<String> = results.iter().map(|r| r.waiters.to_string()).collect();
                let mut cells = vec![row.clone(), waiters.join(", "), "unsupported".to_owned()];
                cells.resize(7, "—".to_owned());
                table.row(cells);
                let reason = results.iter().find_map(|result| result.error.as_deref());
                table.note(format!(
                    "{row}: unsupported: {}",
                    reason.unwrap_or("no reason given")
                ));
                continue;
            }
            let p50s: Vec<_> = results
                .iter()
                .map(|result| Some(result.samples.summary()?.p50))
                .collect();
            let base = p50s.iter().flatten().next().copied();
            for (result, p50) in results.into_iter().zip(p50s) {
                let versus = p50.zip(base).map(|(p50, base)| fmt_ratio(p50, base));
                let [count, p50, p99] = latencies(&result.samples);
                let waiters = result.waiters.to_string();
                let wakeups = result
                    .unfair
                    .then(|| result.wakeups_per_release())
                    .flatten()
                    .map(|per| format!("{per:.2}"));
                table.row([
                    row.clone(),
                    waiters,
                    count,
                    p50,
                    p99,
                    dash(versus),
                    dash(wakeups),
                ]);
                let what = format!("{row} with {} waiters", result.waiters);
                table.error(what, &result.error);
            }
        }
    }
    table
}

/// The contended-throughput table: a row per backend, implementation and client count.
fn contended(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        "implementation",
        ">clients",
        ">grants",
        ">grants/s",
        ">wait p50",
        ">wait p99",
        ">grants per client, fewest – most",
        ">wake-ups per release",
    ]);
    for backend in &report.backends {
        let kind = backend.kind;
        let mut noted_cycles = false;
        let mut noted_unsupported = Vec::new();
        for result in &backend.contended {
            let label = match result.role {
                Some(Role::Library | Role::Unfair) => format!("**{}**", result.label),
                _ => result.label.clone(),
            };
            let clients = result.clients.to_string();
            if result.unsupported {
                let mut cells = vec![kind.to_string(), label, clients, "unsupported".into()];
                cells.resize(9, "—".to_owned());
                table.row(cells);
                if !noted_unsupported.contains(&result.label) {
                    noted_unsupported.push(result.label.clone());
                    let reason = result.error.as_deref().unwrap_or("no reason given");
                    table.note(format!("{kind} / {}: unsupported: {reason}", result.label));
                }
                continue;
            }
            let summary = result.waits.summary();
            let wait = |pick: fn(&crate::stats::Summary) -> std::time::Duration| {
                let marked = if result.whole_cycles { "*" } else { "" };
                dash(
                    summary
                        .as_ref()
                        .map(|s| format!("{}{marked}", fmt_duration(pick(s)))),
                )
            };
            let measured = result.grants > 0 || result.error.is_none();
            table.row([
                kind.to_string(),
                label,
                clients,
                if measured {
                    result.grants.to_string()
                } else {
                    "—".into()
                },
                if measured {
                    fmt_rate(result.rate())
                } else {
                    "—".into()
                },
                wait(|s| s.p50),
                wait(|s| s.p99),
                dash(
                    result
                        .spread()
                        .filter(|_| measured)
                        .map(|(least, most)| format!("{least} – {most}")),
                ),
                dash(result.wakeups_per_release().map(|per| format!("{per:.2}"))),
            ]);
            if result.whole_cycles && !noted_cycles {
                noted_cycles = true;
                table.note(format!(
                    "{kind}: * a peer timed in its own process reports its whole cycle (lock \
                     and unlock), not its wait alone"
                ));
            }
            let what = format!("{kind} / {} with {} clients", result.label, result.clients);
            table.error(what, &result.error);
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

/// `library`'s rate over `side`'s, with the lowest and highest ratio of one round.
fn versus(library: &Throughput, side: &Throughput) -> Option<String> {
    let ratio = format!("×{:.2}", library.ratio_to(side)?);
    let rounds = library.round_rates.iter().zip(&side.round_rates);
    let ratios = rounds
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs);
    let range = ratios.fold(None, |range: Option<(f64, f64)>, ratio| {
        let (low, high) = range.unwrap_or((ratio, ratio));
        Some((low.min(ratio), high.max(ratio)))
    });
    Some(match range {
        Some((low, high)) => format!("{ratio} (×{low:.2} – ×{high:.2})"),
        None => ratio,
    })
}

/// The many-clients table: a row per side, distsync's fair and unfair lock each with
/// its own ratios to the raw clients and to the peer's.
fn aggregate(report: &Report) -> Table {
    let mut table = Table::new(&[
        "backend",
        "side",
        ">clients",
        ">cycles",
        ">cycles/s",
        ">÷ raw (per-round range)",
        ">÷ peer (per-round range)",
        "setup",
    ]);
    for backend in &report.backends {
        let (kind, Some(aggregate)) = (backend.kind, &backend.aggregate) else {
            continue;
        };
        let (raw, peer) = (aggregate.raw.as_ref(), aggregate.peer.as_ref());
        let mut side_row = |side: &Throughput, label, ratios: [Option<String>; 2], setup| {
            let [to_raw, to_peer] = ratios;
            table.row([
                kind.to_string(),
                label,
                side.clients.to_string(),
                side.cycles.to_string(),
                fmt_rate(side.rate()),
                dash(to_raw),
                dash(to_peer),
                String::from(setup),
            ]);
            table.error(format!("{kind} / {}", side.label), &side.error);
        };
        for library in [&aggregate.library, &aggregate.unfair]
            .into_iter()
            .flatten()
        {
            let label = format!("**{}**", library.label);
            let ratios = [raw, peer].map(|side| side.and_then(|side| versus(library, side)));
            side_row(library, label, ratios, aggregate.setup.as_str());
        }
        if let Some(raw) = raw {
            let setup = "one connection (client) each";
            side_row(raw, raw.label.clone(), [None, None], setup);
        }
        if let Some(peer) = peer {
            let setup = "a pool of one connection (client) each";
            side_row(peer, peer.label.clone(), [None, None], setup);
        }
        table.error(kind, &aggregate.error);
    }
    table
}

/// A target's figure and whether it is met (`None`: a figure without a bound), or why
/// it has none.
type Judged = std::result::Result<(String, Option<bool>), String>;

/// The cycle p50 of the first row of `backend` that `pick` chooses.
fn cycle_p50(
    backend: &BackendReport,
    pick: impl Fn(&CycleResult) -> bool,
) -> std::result::Result<std::time::Duration, String> {
    let row =
        (backend.cycle.iter().find(|row| pick(row))).ok_or_else(|| "not in this run".to_owned())?;
    if row.unsupported {
        return Err("unsupported by this backend".into());
    }
    let summary = row.samples.summary();
    summary
        .map(|summary| summary.p50)
        .ok_or_else(|| row.error.clone().unwrap_or_else(|| "no samples".into()))
}

/// Whether a row is labelled `prefix`…
fn labelled(prefix: &'static str) -> impl Fn(&CycleResult) -> bool {
    move |row: &CycleResult| row.label.starts_with(prefix)
}

/// Whether a row is of `role`.
fn of(role: Role) -> impl Fn(&CycleResult) -> bool {
    move |row: &CycleResult| row.role == role
}

/// `top`'s cycle p50 over `bottom`'s, judged against `bound` (at least it with
/// `at_least`, else at most it; no bound: a figure only).
fn cycle_ratio(
    backend: &BackendReport,
    top: impl Fn(&CycleResult) -> bool,
    bottom: impl Fn(&CycleResult) -> bool,
    bound: Option<(f64, bool)>,
) -> Judged {
    let (top, bottom) = match (cycle_p50(backend, top), cycle_p50(backend, bottom)) {
        (Ok(top), Ok(bottom)) => (top, bottom),
        (Err(why), Ok(_)) | (Ok(_), Err(why)) => return Err(why),
        // distsync's side says first that the backend does not have the lock.
        (Err(_), Err(bottom)) if bottom.starts_with("unsupported") => return Err(bottom),
        (Err(top), Err(_)) => return Err(top),
    };
    let ratio = crate::stats::ratio(top, bottom).ok_or_else(|| "a p50 of zero".to_owned())?;
    let met = bound.map(|(bound, at_least)| {
        if at_least {
            ratio >= bound
        } else {
            ratio <= bound
        }
    });
    Ok((format!("×{ratio:.2}"), met))
}

/// The unfair lock's wake-ups per release in the hand-off with 100 waiters.
fn wakeups_at_100(backend: &BackendReport) -> Judged {
    let result = backend
        .handoff
        .iter()
        .find(|result| result.unfair && result.peer.is_none() && result.waiters == 100)
        .ok_or_else(|| "no hand-off with 100 waiters in this run".to_owned())?;
    if result.unsupported {
        return Err("unsupported by this backend".into());
    }
    let per = result.wakeups_per_release().ok_or_else(|| {
        result
            .error
            .clone()
            .unwrap_or_else(|| "no releases counted".into())
    })?;
    Ok((format!("{per:.2}"), Some(per <= 3.0)))
}

/// The text of a many-clients target of distsync's lock of `fairness` against
/// `side`, at least `bound` (none: a figure only).
fn aggregate_target(fairness: Fairness, side: &str, bound: Option<f64>) -> String {
    let lock = match fairness {
        Fairness::Unfair => "unfair lock",
        _ => "fair lock",
    };
    let bound = bound.map_or_else(
        || " (no bound)".to_owned(),
        |bound| format!(" ≥ ×{bound:.2}"),
    );
    format!("64 clients, each its own {lock}: cycles/s ÷ {side}{bound}")
}

/// The side of a many-clients result a ratio is taken against.
type Side = fn(&AggregateResult) -> Option<&Throughput>;

/// The judgement of the many-clients ratio of distsync's lock of `fairness` to the
/// side `against` picks, at least `bound` (none: a figure only), or why there is none.
fn throughput_ratio(
    aggregate: Option<&AggregateResult>,
    fairness: Fairness,
    against: Side,
    bound: Option<f64>,
) -> Judged {
    let aggregate = aggregate.ok_or_else(|| "not in this run".to_owned())?;
    let missing = || {
        aggregate
            .error
            .clone()
            .unwrap_or_else(|| "not in this run".into())
    };
    let idle = |side: &Throughput| side.error.clone().unwrap_or_else(|| "no cycles".into());
    let top = aggregate.side(fairness).ok_or_else(missing)?;
    let bottom = against(aggregate).ok_or_else(missing)?;
    let ratio = top.ratio_to(bottom).ok_or_else(|| {
        let stopped = if top.rate() <= 0.0 { top } else { bottom };
        idle(stopped)
    })?;
    Ok((format!("×{ratio:.2}"), bound.map(|bound| ratio >= bound)))
}

/// The contended row of `clients` clients that `pick` chooses, with grants, or why
/// there is none.
fn contended_row<'a>(
    backend: &'a BackendReport,
    clients: usize,
    pick: &dyn Fn(&ContendedResult) -> bool,
) -> std::result::Result<&'a ContendedResult, String> {
    let row = (backend.contended.iter())
        .find(|row| row.clients == clients && pick(row))
        .ok_or_else(|| "not in this run".to_owned())?;
    if row.unsupported {
        return Err("unsupported by this backend".into());
    }
    if row.grants == 0 {
        return Err(row.error.clone().unwrap_or_else(|| "no grants".into()));
    }
    Ok(row)
}

/// `top`'s contended grants/s over `bottom`'s with `clients` clients on one lock, at
/// least `bound` (none: a figure only).
fn contended_ratio(
    backend: &BackendReport,
    clients: usize,
    top: &dyn Fn(&ContendedResult) -> bool,
    bottom: &dyn Fn(&ContendedResult) -> bool,
    bound: Option<f64>,
) -> Judged {
    let top = contended_row(backend, clients, top)?;
    let bottom = contended_row(backend, clients, bottom)?;
    let ratio = top.rate() / bottom.rate();
    Ok((format!("×{ratio:.2}"), bound.map(|bound| ratio >= bound)))
}

/// The client counts of the run's contended case on `backend` (2, 8 and 64 by
/// default), from distsync's fair-lock rows.
fn contended_counts(backend: &BackendReport) -> Vec<usize> {
    let mut counts: Vec<usize> = (backend.contended.iter())
        .filter(|row| row.role == Some(Role::Library))
        .map(|row| row.clients)
        .collect();
    counts.dedup();
    counts
}

/// The contended role `role`.
fn contending(role: Role) -> impl Fn(&ContendedResult) -> bool {
    move |row: &ContendedResult| row.role == Some(role)
}

/// The contended row labelled `prefix`….
fn contending_label(prefix: &'static str) -> impl Fn(&ContendedResult) -> bool {
    move |row: &ContendedResult| row.label.starts_with(prefix)
}

/// The targets of a SQL store (PostgreSQL, MySQL) judged against `peer`
/// (`distributed-lock` on the same store): the fair lock's contended grants/s ÷ the
/// peer's at least `contended` at every client count, and ÷ the store's durable floor
/// (one row update and a synchronous commit per grant) at least `floor` where one is
/// given; 64 clients each on its own lock ÷ the peer's at least 1, and ÷ the raw
/// pair's at least `own_raw` where one is given; the uncontended cycle at most `cycle`
/// times the raw pair's.
struct SqlTargets {
    class: &'static str,
    contended: f64,
    floor: Option<f64>,
    own_raw: Option<f64>,
    cycle: f64,
}

impl SqlTargets {
    /// The durable grants' targets, on PostgreSQL and on MySQL.
    const DURABLE: Self = Self {
        class: DURABLE_CLASS,
        contended: 0.5,
        floor: Some(0.8),
        own_raw: None,
        cycle: 3.0,
    };

    fn push(self, backend: &BackendReport, targets: &mut Vec<Target>) {
        let class = self.class;
        let peer = contending_label("distributed-lock");
        for clients in contended_counts(backend) {
            targets.push((
                class,
                format!(
                    "{clients} clients on one lock: fair grants/s ÷ distributed-lock's ≥ ×{:.2}",
                    self.contended
                ),
                contended_ratio(
                    backend,
                    clients,
                    &contending(Role::Library),
                    &peer,
                    Some(self.contended),
                ),
            ));
            if let Some(floor) = self.floor {
                targets.push((
                    class,
                    format!(
                        "{clients} clients on one lock: fair grants/s ÷ the durable floor's \
                         (one row update and a synchronous commit per grant) ≥ ×{floor:.2}"
                    ),
                    contended_ratio(
                        backend,
                        clients,
                        &contending(Role::Library),
                        &contending_label(crate::raw::durable_floor::LABEL),
                        Some(floor),
                    ),
                ));
            }
        }
        let aggregate = backend.aggregate.as_ref();
        targets.push((
            class,
            aggregate_target(Fairness::Fair, "64 distributed-lock clients'", Some(1.0)),
            throughput_ratio(aggregate, Fairness::Fair, |a| a.peer.as_ref(), Some(1.0)),
        ));
        targets.push((
            class,
            aggregate_target(Fairness::Fair, "64 raw clients'", self.own_raw),
            throughput_ratio(aggregate, Fairness::Fair, |a| a.raw.as_ref(), self.own_raw),
        ));
        // The unfair lock's ratios follow as figures: the targets keep the fair lock's
        // guarantees.
        let sides: [(&str, Side); 2] = [
            ("64 raw clients'", |a| a.raw.as_ref()),
            ("64 distributed-lock clients'", |a| a.peer.as_ref()),
        ];
        for (side, against) in sides {
            targets.push((
                UNFAIR_CLASS,
                aggregate_target(Fairness::Unfair, side, None),
                throughput_ratio(aggregate, Fairness::Unfair, against, None),
            ));
        }
        targets.push((
            class,
            format!(
                "uncontended fair cycle p50 ÷ the raw pair's ≤ ×{:.2}",
                self.cycle
            ),
            cycle_ratio(
                backend,
                of(Role::Library),
                of(Role::Raw),
                Some((self.cycle, false)),
            ),
        ));
    }
}

/// The class of the unfair lock's targets and figures.
const UNFAIR_CLASS: &str = "unfair lock, against the fair lock and the peers without a line";

/// A target: its class, what it asks and its judgement.
type Target = (&'static str, String, Judged);

/// The class of the fair lock's targets against peers that keep a line.
const FAIR_CLASS: &str = "fair lock, against the peers that keep a line";

/// The class of the SQL stores' durable targets.
const DURABLE_CLASS: &str = "fair lock, durable grants, at production settings";

/// The targets measured on `backend`: its store's own, then the unfair lock's.
fn backend_targets(backend: &BackendReport) -> Vec<Target> {
    let mut targets = match backend.kind {
        BackendKind::Etcd => etcd_targets(backend),
        BackendKind::Zookeeper => vec![cycle_at_least_peer(
            backend,
            FAIR_CLASS,
            "Curator InterProcessMutex cycle p50 ÷ distsync's ≥ ×1.00",
            "Curator",
            Role::Library,
        )],
        BackendKind::Redis => redis_targets(backend),
        BackendKind::Postgres | BackendKind::PostgresUnflushed => postgres_targets(backend),
        // The PostgreSQL durable targets, against MySQL's own floor and
        // distributed-lock's MySQL provider.
        BackendKind::Mysql => {
            let mut targets = Vec::new();
            SqlTargets::DURABLE.push(backend, &mut targets);
            targets
        }
        BackendKind::Nats => vec![(
            "lock, uncontended, at production settings",
            "uncontended fair cycle p50 ÷ the raw KV create + purge pair's ≤ ×1.50".into(),
            cycle_ratio(
                backend,
                of(Role::Library),
                of(Role::Raw),
                Some((1.5, false)),
            ),
        )],
        BackendKind::Memory => Vec::new(),
    };
    targets.extend(unfair_targets(backend));
    targets
}

/// etcd's targets: the fair lock's cycle against the Lock RPC and Go's
/// `concurrency.Mutex`.
fn etcd_targets(backend: &BackendReport) -> Vec<Target> {
    vec![
        cycle_at_least_peer(
            backend,
            FAIR_CLASS,
            "Lock RPC cycle p50 ÷ distsync's ≥ ×1.00",
            "etcd Lock RPC",
            Role::Library,
        ),
        cycle_at_least_peer(
            backend,
            FAIR_CLASS,
            "Go concurrency.Mutex cycle p50 ÷ distsync's ≥ ×1.00",
            "Go concurrency.Mutex",
            Role::Library,
        ),
    ]
}

/// The target `target` of `class`: the uncontended cycle of `role`'s lock at least as
/// fast as the peer labelled `peer` (the peer's p50 ÷ ours ≥ ×1.00).
fn cycle_at_least_peer(
    backend: &BackendReport,
    class: &'static str,
    target: &str,
    peer: &'static str,
    role: Role,
) -> Target {
    (
        class,
        target.to_owned(),
        cycle_ratio(backend, labelled(peer), of(role), Some((1.0, true))),
    )
}

/// Redis's targets: the unfair lock against rslock, uncontended and contended (its
/// default retry).
fn redis_targets(backend: &BackendReport) -> Vec<Target> {
    let mut targets = vec![cycle_at_least_peer(
        backend,
        UNFAIR_CLASS,
        "rslock cycle p50 ÷ the unfair lock's ≥ ×1.00",
        "rslock",
        Role::Unfair,
    )];
    for clients in contended_counts(backend) {
        targets.push((
            UNFAIR_CLASS,
            format!(
                "{clients} clients on one lock: unfair grants/s ÷ rslock's (its default \
                 retry) ≥ ×1.00"
            ),
            contended_ratio(
                backend,
                clients,
                &contending(Role::Unfair),
                &contending_label("rslock"),
                Some(1.0),
            ),
        ));
    }
    targets
}

/// PostgreSQL's targets in its grant mode (durable or unflushed), and the hand-off
/// with one waiter.
fn postgres_targets(backend: &BackendReport) -> Vec<Target> {
    let sql = if backend.kind == BackendKind::Postgres {
        SqlTargets::DURABLE
    } else {
        SqlTargets {
            class: "fair lock, unflushed grants (a declared mode), at production settings",
            contended: 1.0,
            floor: None,
            own_raw: Some(0.3),
            cycle: 2.0,
        }
    };
    let class = sql.class;
    let mut targets = Vec::new();
    sql.push(backend, &mut targets);
    let handoff = backend
        .handoff
        .iter()
        .find(|result| !result.unfair && result.peer.is_none() && result.waiters == 1)
        .and_then(|result| result.samples.summary());
    targets.push((
        class,
        "hand-off p50 with one waiter ≤ 0.6 ms".into(),
        handoff
            .map(|summary| {
                let met = summary.p50 <= std::time::Duration::from_micros(600);
                (fmt_duration(summary.p50), Some(met))
            })
            .ok_or_else(|| "not in this run".to_owned()),
    ));
    targets
}

/// The unfair lock's targets on every store that has both locks: it trades arrival
/// order for throughput, so under contention it grants at least as often as the fair
/// lock; and a release wakes few of its waiters.
fn unfair_targets(backend: &BackendReport) -> Vec<Target> {
    let mut targets = Vec::new();
    if backend.kind != BackendKind::Memory {
        for clients in contended_counts(backend) {
            targets.push((
                UNFAIR_CLASS,
                format!("{clients} clients on one lock: unfair grants/s ÷ the fair lock's ≥ ×1.00"),
                contended_ratio(
                    backend,
                    clients,
                    &contending(Role::Unfair),
                    &contending(Role::Library),
                    Some(1.0),
                ),
            ));
        }
    }
    targets.push((
        "unfair lock, no herd",
        "wake-ups per release with 100 waiters ≤ 3 (the conformance suite's bound)".into(),
        wakeups_at_100(backend),
    ));
    targets
}

/// Every target of the run with its figure and verdict, by guarantee class.
fn targets(report: &Report) -> Table {
    let mut table = Table::new(&["backend", "class", "target", ">this run", "verdict"]);
    for backend in &report.backends {
        for (class, target, judged) in backend_targets(backend) {
            let (figure, verdict) = match judged {
                Ok((figure, Some(true))) => (figure, "met".to_owned()),
                Ok((figure, Some(false))) => (figure, "**missed**".to_owned()),
                Ok((figure, None)) => (figure, "figure only".to_owned()),
                Err(reason) => ("—".to_owned(), format!("not measured: {reason}")),
            };
            table.row([
                backend.kind.to_string(),
                class.to_owned(),
                target,
                figure,
                verdict,
            ]);
        }
    }
    table
}
