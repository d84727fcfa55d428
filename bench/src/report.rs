//! The markdown report: machine, targets, tables, plots, and the hand-written analysis
//! carried over from the previous `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::aggregate::AGGREGATE_TARGET;
use crate::cycle::{CycleResult, Role};
use crate::run::{BackendReport, Report};
use crate::stats::{fmt_duration, fmt_rate, fmt_ratio, ratio, Summary};

/// Marks the start of the hand-written analysis kept across runs.
pub const ANALYSIS_BEGIN: &str =
    "<!-- analysis: hand-written, kept when the bench rewrites this file -->";
/// Marks its end.
pub const ANALYSIS_END: &str = "<!-- /analysis -->";

/// The library overhead target: distsync's cycle p50 at most this times the raw one.
pub const OVERHEAD_TARGET: f64 = 1.10;
/// The herd target: hand-off p50 at the most waiters at most this times at 1 waiter.
pub const HERD_TARGET: f64 = 2.0;
/// The hand-off latency target: p50 with one waiter at most this, per backend (none
/// for the in-process memory store).
pub fn handoff_p50_target(kind: &str) -> Option<Duration> {
    match kind {
        "etcd" => Some(Duration::from_millis(2)),
        "redis" | "postgres" => Some(Duration::from_micros(400)),
        _ => None,
    }
}
/// PostgreSQL with its production settings (fsync and synchronous_commit on): the lock
/// cycle's p50 at most this times the raw advisory lock pair's.
pub const DURABLE_POSTGRES_TARGET: f64 = 1.3;
/// At scale: the most store connections 10,000 holds and 1,000 waiters may use.
pub const SCALE_CONNECTIONS_TARGET: i64 = 32;

/// The section on the CI regression guard ([`crate::guard`]), written into every report.
pub const GUARD_SECTION: &str = "\
## Regression guard (CI)

`scripts/bench-guard.sh` (the `bench-guard` step of `scripts/test-all.sh`, after \
`conformance`) runs `distsync-bench --guard`, built as above: the lock cycle only, on \
etcd, Redis and PostgreSQL, distsync beside the raw command pair and each in-process \
peer (etcd Lock RPC, rslock, distributed-lock on Redis and PostgreSQL; not the etcdctl \
processes), in 16 rounds of 200 cycles each, taken in turns of 10 so that load bursts \
hit all alike (about 20 s in all; each implementation is capped at 6 s). Per round it \
takes distsync's p50 ÷ the other's; the run's ratio is the rounds' median and its \
noise their robust spread (1.4826 × median absolute deviation). It fails when a ratio \
is above its committed baseline (`bench/baseline.json`, written on this machine by \
`scripts/bench-guard.sh --write-baseline`: the median of 5 runs, with the command and \
commit; its noise also covers the spread between those runs) by more than max(3 × \
noise, 20 % of the baseline), noise being the larger of the run's and the baseline's, \
in two runs (the backends with a regressed ratio are measured once more, and a ratio \
that does not regress again passes), or when a baseline ratio could not be measured; \
it prints ratio, baseline, noise, the ratio it fails above and the verdict. It \
measures the servers test-all started (PostgreSQL there runs with fsync and \
synchronous_commit off, which is fine for a ratio guard: it catches a change in \
distsync's statements or client work, though a change that adds a durable commit \
weighs less there than at production settings, which `scripts/bench.sh` measures). \
Only ratios within one run are compared, never absolute times. Rewrite the baseline \
when distsync gets faster on purpose or a peer changes.

";

/// The hand-written analysis in an earlier report, if it has one.
pub fn analysis_of(previous: &str) -> Option<&str> {
    let start = previous.find(ANALYSIS_BEGIN)? + ANALYSIS_BEGIN.len();
    let end = start + previous[start..].find(ANALYSIS_END)?;
    Some(previous[start..end].trim_matches('\n'))
}

/// Where the plots are, relative to the markdown file.
pub const CYCLE_SVG: &str = "bench/cycle.svg";
/// See [`CYCLE_SVG`].
pub const HANDOFF_SVG: &str = "bench/handoff.svg";

/// The whole report. `plots` says whether the SVG files were written beside it.
pub fn markdown(report: &Report, analysis: Option<&str>, plots: bool) -> String {
    let mut out = String::new();
    header(&mut out, report);
    targets(&mut out, report);
    cycle_table(&mut out, report, plots);
    handoff_table(&mut out, report, plots);
    election_table(&mut out, report);
    watch_table(&mut out, report);
    queue_table(&mut out, report);
    stm_table(&mut out, report);
    scale_table(&mut out, report, plots);
    aggregate_table(&mut out, report);
    residue_table(&mut out, report);
    let _ = writeln!(out, "## Analysis\n\n{ANALYSIS_BEGIN}");
    out.push_str(analysis.unwrap_or(
        "_Not written yet: explain here what the figures show and why a target is missed; \
         the bench keeps this section when it rewrites the file._",
    ));
    let _ = writeln!(out, "\n{ANALYSIS_END}");
    out
}

/// Only the tables (for standard output).
pub fn tables(report: &Report) -> String {
    let mut out = String::new();
    targets(&mut out, report);
    cycle_table(&mut out, report, false);
    handoff_table(&mut out, report, false);
    election_table(&mut out, report);
    watch_table(&mut out, report);
    queue_table(&mut out, report);
    stm_table(&mut out, report);
    scale_table(&mut out, report, false);
    aggregate_table(&mut out, report);
    residue_table(&mut out, report);
    out
}

fn header(out: &mut String, report: &Report) {
    let machine = &report.machine;
    let plan = &report.plan;
    let _ = writeln!(
        out,
        "# Benchmarks\n\n\
         Written by `distsync-bench` (crate `bench/`); everything but the Analysis section is \
         regenerated on every run.\n\n\
         **Reproduce** (starts a set of test servers of its own through `scripts/servers.sh`, \
         runs the bench, rewrites this file and `docs/bench/*.svg`, stops the servers):\n\n\
         ```sh\nscripts/bench.sh\n```\n\n\
         which runs `cargo run --release -p distsync-bench --features full -- {}`. \
         A smoke run: `scripts/bench.sh --quick --out /tmp/bench`.\n",
        report.arguments.join(" ")
    );
    out.push_str(GUARD_SECTION);
    let _ = writeln!(out, "## Machine and run\n\n| | |\n|---|---|");
    let mut fact = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            let _ = writeln!(out, "| {name} | {value} |");
        }
    };
    fact("date", Some(&machine.started));
    fact("CPUs (nproc)", Some(&machine.cpus.to_string()));
    fact("CPU", machine.cpu_model.as_deref());
    fact("memory", machine.memory.as_deref());
    fact("OS", machine.os.as_deref());
    fact("kernel", machine.kernel.as_deref());
    fact("rustc", machine.rustc.as_deref());
    fact("commit", machine.commit.as_deref());
    for backend in &report.backends {
        let server = match &backend.server {
            Some(version) => format!("{version} at `{}`", backend.url),
            None => format!("`{}`", backend.url),
        };
        fact(&format!("{} server", backend.kind), Some(&server));
    }
    fact("etcdctl", report.etcdctl.as_deref());
    fact(
        "load average (1/5/15 min) at start",
        machine.load_start.as_deref(),
    );
    fact("load average at end", machine.load_end.as_deref());
    fact(
        "wall time of the run",
        Some(&format!("{:.0} s", report.elapsed.as_secs_f64())),
    );
    let _ = writeln!(
        out,
        "\nAll servers run on this machine, on loopback, beside the bench (so client and \
         server share its {} CPUs). Other work on the machine (e.g. compilations) shows up as \
         noise, mostly in the p99 column; the load averages above say how busy it was. The \
         cycle rows of one store run in {} interleaved rounds so that such noise hits all of \
         them alike and their ratios stay meaningful.\n\n\
         Counts: {} measured cycles per implementation after {} warm-up cycles \
         (process-spawning rows a tenth); {} hand-offs per waiter count; {} leader changes; \
         {} queue items and {} STM transfers per client count; every measurement capped at \
         {} s.\n",
        machine.cpus,
        plan.rounds,
        plan.cycles,
        plan.warmup,
        plan.handoffs,
        plan.elections,
        plan.queue_items,
        plan.stm_transfers,
        plan.case_time.as_secs()
    );
    for (kind, reason) in &report.skipped {
        let _ = writeln!(out, "- **{kind}: not measured** — {reason}");
    }
    if !report.skipped.is_empty() {
        out.push('\n');
    }
}

fn summary(row: &CycleResult) -> Option<Summary> {
    row.samples.summary()
}

fn p50(row: Option<&CycleResult>) -> Option<Duration> {
    row.and_then(summary).map(|summary| summary.p50)
}

fn targets(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "## Targets\n\n| target | backend | measured | verdict |\n|---|---|---|---|"
    );
    for backend in &report.backends {
        let kind = backend.kind;
        let library = p50(backend.cycle_row(Role::Library));
        let raw = p50(backend.cycle_row(Role::Raw));
        if let (Some(library), Some(raw)) = (library, raw) {
            let factor = ratio(library, raw).unwrap_or(f64::INFINITY);
            let _ = writeln!(
                out,
                "| library overhead ≤ 10% over the raw sequence (cycle p50) | {kind} | {} vs {} raw: {:+.0}% | {} |",
                fmt_duration(library),
                fmt_duration(raw),
                (factor - 1.0) * 100.0,
                verdict(factor <= OVERHEAD_TARGET)
            );
        }
    }
    for backend in &report.backends {
        let durable = backend
            .server
            .as_deref()
            .is_some_and(|server| server.contains("fsync = on"));
        if backend.kind.as_str() != "postgres" || !durable {
            continue;
        }
        let library = p50(backend.cycle_row(Role::Library));
        let raw = p50(backend.cycle_row(Role::Raw));
        if let (Some(library), Some(raw)) = (library, raw) {
            let factor = ratio(library, raw).unwrap_or(f64::INFINITY);
            let _ = writeln!(
                out,
                "| lock cycle ≤ {DURABLE_POSTGRES_TARGET}× the raw pg_advisory_lock + unlock pair, fsync and synchronous_commit on (cycle p50) | {} | {} vs {} raw: ×{factor:.2} | {} |",
                backend.kind,
                fmt_duration(library),
                fmt_duration(raw),
                verdict(factor <= DURABLE_POSTGRES_TARGET)
            );
        }
    }
    for backend in &report.backends {
        let Some(scale) = &backend.scale else {
            continue;
        };
        let peak = [scale.connections_peak, scale.connections_handoff]
            .into_iter()
            .flatten()
            .max();
        if let Some(peak) = peak {
            let _ = writeln!(
                out,
                "| {} locks held and {} waiting from one process with ≤ {SCALE_CONNECTIONS_TARGET} connections | {} | {peak} connections at most{} | {} |",
                scale.holds,
                scale.waiting,
                backend.kind,
                scale
                    .max_connections
                    .map_or(String::new(), |max| format!(" (max_connections {max})")),
                verdict(peak <= SCALE_CONNECTIONS_TARGET)
            );
        }
    }
    for backend in &report.backends {
        let measured: Vec<_> = backend
            .handoff
            .iter()
            .filter_map(|result| Some((result.waiters, result.samples.summary()?.p50)))
            .collect();
        let first = backend.handoff.first().map(|result| result.waiters);
        let last = backend.handoff.last().map(|result| result.waiters);
        match (measured.first(), measured.last(), first, last) {
            (Some(&(low, base)), Some(&(high, top)), Some(wanted_low), Some(wanted_high))
                if high > low =>
            {
                let factor = ratio(top, base).unwrap_or(f64::INFINITY);
                let complete = low == wanted_low && high == wanted_high;
                let _ = writeln!(
                    out,
                    "| hand-off p50 at {wanted_high} waiters ≤ 2× at {wanted_low} (no herd) | {} | {} at {high} waiters vs {} at {low} waiter{}: ×{factor:.2} | {} |",
                    backend.kind,
                    fmt_duration(top),
                    fmt_duration(base),
                    if low == 1 { "" } else { "s" },
                    if complete {
                        verdict(factor <= HERD_TARGET).to_owned()
                    } else {
                        format!(
                            "{} up to {high} waiters; {wanted_high} not measured",
                            verdict(factor <= HERD_TARGET)
                        )
                    }
                );
            }
            (_, _, Some(wanted_low), Some(wanted_high)) if wanted_high > wanted_low => {
                let _ = writeln!(
                    out,
                    "| hand-off p50 at {wanted_high} waiters ≤ 2× at {wanted_low} (no herd) | {} | — | not measured |",
                    backend.kind
                );
            }
            _ => {}
        }
    }
    for backend in &report.backends {
        handoff_targets(out, backend);
    }
    for backend in &report.backends {
        let Some(library) = p50(backend.cycle_row(Role::Library)) else {
            continue;
        };
        let peers: Vec<_> = backend
            .cycle
            .iter()
            .filter(|row| row.role == Role::Peer)
            .collect();
        if peers.is_empty() {
            continue;
        }
        let mut figures = Vec::new();
        let mut slower_than = Vec::new();
        for peer in &peers {
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
        let _ = writeln!(
            out,
            "| at least as fast as every peer (cycle p50, peer ÷ distsync) | {} | {} | {} |",
            backend.kind,
            figures.join("; "),
            if slower_than.is_empty() {
                verdict(true).to_owned()
            } else {
                format!("**missed**: slower than {}", slower_than.join(", "))
            }
        );
    }
    aggregate_targets(out, report);
    residue_targets(out, report);
    out.push('\n');
}

/// The hand-off rows of issue 18: p50 with one waiter under the backend's target, and
/// p99 at the most waiters at most [`HERD_TARGET`] times p99 at one.
fn handoff_targets(out: &mut String, backend: &BackendReport) {
    let summaries: Vec<_> = backend
        .handoff
        .iter()
        .filter_map(|result| Some((result.waiters, result.samples.summary()?)))
        .collect();
    let kind = backend.kind.as_str();
    let one = summaries.iter().find(|(waiters, _)| *waiters == 1);
    if let (Some(target), Some((_, one))) = (handoff_p50_target(kind), one) {
        let _ = writeln!(
            out,
            "| hand-off p50 with one waiter ≤ {} | {kind} | {} | {} |",
            fmt_duration(target),
            fmt_duration(one.p50),
            verdict(one.p50 <= target)
        );
    }
    let most = summaries.iter().max_by_key(|(waiters, _)| *waiters);
    if let (Some((_, one)), Some((high, top))) = (one, most) {
        if *high > 1 {
            let factor = ratio(top.p99, one.p99).unwrap_or(f64::INFINITY);
            let _ = writeln!(
                out,
                "| hand-off p99 at {high} waiters ≤ {HERD_TARGET}× p99 at one | {kind} | {} vs {}: ×{factor:.2} | {} |",
                fmt_duration(top.p99),
                fmt_duration(one.p99),
                verdict(factor <= HERD_TARGET)
            );
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn cycle_table(out: &mut String, report: &Report, plots: bool) {
    if report
        .backends
        .iter()
        .all(|backend| backend.cycle.is_empty())
    {
        return;
    }
    let _ = writeln!(
        out,
        "## Uncontended lock+unlock cycle\n\n\
         One session (or client), one name, no other contender: `lock()` then `unlock()` \
         back to back. *vs raw* is the row's p50 over the raw sequence's p50 on the same \
         store and client crate; *vs distsync* is the row's p50 over distsync's (above 1: \
         distsync is faster). ops/s is for one client running cycles back to back. Rows in \
         italics are not locks of their own: the raw sequence plus one step distsync takes on \
         that store (to show where its overhead goes), on Redis the raw cycle through \
         distsync's own grant and release scripts without the library (what the scripts cost \
         against what the client adds), and the cost of merely spawning `etcdctl`.\n"
    );
    if plots {
        let _ = writeln!(
            out,
            "![cycle latency per backend and implementation]({CYCLE_SVG})\n"
        );
    }
    let _ = writeln!(
        out,
        "| backend | implementation | cycles | p50 | p99 | ops/s | vs raw | vs distsync |\n\
         |---|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for backend in &report.backends {
        let library = p50(backend.cycle_row(Role::Library));
        let raw = p50(backend.cycle_row(Role::Raw));
        for row in &backend.cycle {
            let label = match row.role {
                Role::Library => format!("**{}**", row.label),
                Role::Baseline | Role::Diagnostic => format!("_{}_", row.label),
                _ => row.label.clone(),
            };
            match summary(row) {
                Some(summary) => {
                    let versus = |base: Option<Duration>| match base {
                        Some(base) if row.role != Role::Baseline => fmt_ratio(summary.p50, base),
                        _ => "—".into(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {label} | {} | {} | {} | {} | {} | {} |",
                        backend.kind,
                        summary.count,
                        fmt_duration(summary.p50),
                        fmt_duration(summary.p99),
                        fmt_rate(summary.ops_per_sec),
                        versus(raw),
                        versus(library),
                    );
                    for (phase, samples) in &row.phases {
                        if let Some(phase_summary) = samples.summary() {
                            let _ = writeln!(
                                out,
                                "| {} | &nbsp;&nbsp;↳ {phase} | {} | {} | {} | | | |",
                                backend.kind,
                                phase_summary.count,
                                fmt_duration(phase_summary.p50),
                                fmt_duration(phase_summary.p99),
                            );
                        }
                    }
                    if let Some(error) = &row.error {
                        notes.push(format!(
                            "{} / {}: stopped early: {error}",
                            backend.kind, row.label
                        ));
                    }
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| {} | {label} | — | — | — | — | — | — |",
                        backend.kind
                    );
                    notes.push(format!(
                        "{} / {}: not measured: {}",
                        backend.kind,
                        row.label,
                        row.error.as_deref().unwrap_or("no samples")
                    ));
                }
            }
        }
        if backend.kind == crate::target::BackendKind::Memory {
            notes.push("memory: no raw sequence (there is no client crate beneath the in-process store), so no ratio".into());
        }
    }
    notes_list(out, &notes);
}

/// The notes under a table, as a list (nothing when there are none).
pub(crate) fn notes_list(out: &mut String, notes: &[String]) {
    out.push('\n');
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    if !notes.is_empty() {
        out.push('\n');
    }
}

fn handoff_table(out: &mut String, report: &Report, plots: bool) {
    if report
        .backends
        .iter()
        .all(|backend| backend.handoff.is_empty())
    {
        return;
    }
    let _ = writeln!(
        out,
        "## Contended hand-off\n\n\
         From the holder calling `unlock()` to the next waiter's `lock()` returning, with N \
         waiters in line, each on its own session (all sessions over one client connection). \
         Every participant re-queues after its turn, and a holder releases only once all \
         the others have been waiting for {} ms, so each release hands over to a queued \
         waiter. A herd shows as p50 growing with N.\n",
        report.plan.settle.as_millis()
    );
    if plots {
        let _ = writeln!(out, "![hand-off latency against waiters]({HANDOFF_SVG})\n");
    }
    let _ = writeln!(
        out,
        "| backend | waiters | hand-offs | p50 | p99 | p50 ÷ p50 at {} |\n|---|---:|---:|---:|---:|---:|",
        report.plan.waiters.first().copied().unwrap_or(1)
    );
    let mut notes = Vec::new();
    for backend in &report.backends {
        let base = backend
            .handoff
            .first()
            .and_then(|result| result.samples.summary())
            .map(|summary| summary.p50);
        for result in &backend.handoff {
            match result.samples.summary() {
                Some(summary) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        backend.kind,
                        result.waiters,
                        summary.count,
                        fmt_duration(summary.p50),
                        fmt_duration(summary.p99),
                        base.map_or("—".into(), |base| fmt_ratio(summary.p50, base)),
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | — | — | — | — |",
                        backend.kind, result.waiters
                    );
                }
            }
            if let Some(error) = &result.error {
                notes.push(format!(
                    "{} with {} waiters: {error}",
                    backend.kind, result.waiters
                ));
            }
        }
    }
    notes_list(out, &notes);
}

fn election_table(out: &mut String, report: &Report) {
    if report
        .backends
        .iter()
        .all(|backend| backend.election.is_none())
    {
        return;
    }
    let _ = writeln!(
        out,
        "## Election\n\n\
         From the leader's `resign()` to an `observe()` stream (on a third session) reporting \
         the candidate that was waiting in `campaign()`.\n\n\
         | backend | leader changes | p50 | p99 |\n|---|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for backend in &report.backends {
        let Some(result) = &backend.election else {
            continue;
        };
        match result.samples.summary() {
            Some(summary) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    backend.kind,
                    summary.count,
                    fmt_duration(summary.p50),
                    fmt_duration(summary.p99)
                );
            }
            None => {
                let _ = writeln!(out, "| {} | — | — | — |", backend.kind);
            }
        }
        if let Some(error) = &result.error {
            notes.push(format!("{}: {error}", backend.kind));
        }
    }
    notes_list(out, &notes);
}

fn watch_table(out: &mut String, report: &Report) {
    let probes: Vec<_> = report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.watch_delivery.as_ref()?)))
        .collect();
    if probes.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Evidence: etcd watch delivery\n\n\
         From a put to the event on a watch of that key, for a watch started from the \
         revision after a read when nothing else was written in between (etcd serves it as \
         writes happen) and when one unrelated write came in between (its start revision \
         is then in the past and etcd serves it from a catch-up loop that runs every \
         100 ms).\n\n\
         | backend | watch starts at | probes | p50 | p99 |\n|---|---|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for (kind, probe) in probes {
        for (what, samples) in [
            ("the next revision (synced)", &probe.synced),
            ("a revision already written (unsynced)", &probe.unsynced),
        ] {
            match samples.summary() {
                Some(summary) => {
                    let _ = writeln!(
                        out,
                        "| {kind} | {what} | {} | {} | {} |",
                        summary.count,
                        fmt_duration(summary.p50),
                        fmt_duration(summary.p99)
                    );
                }
                None => {
                    let _ = writeln!(out, "| {kind} | {what} | — | — | — |");
                }
            }
        }
        if let Some(error) = &probe.error {
            notes.push(format!("{kind}: {error}"));
        }
    }
    notes_list(out, &notes);
}

fn queue_table(out: &mut String, report: &Report) {
    if report
        .backends
        .iter()
        .all(|backend| backend.queue.is_empty())
    {
        return;
    }
    let _ = writeln!(
        out,
        "## Queue\n\n\
         Items enqueued by N concurrent clients, then dequeued by N concurrent clients (each \
         client its own connection; on memory, one shared store); items per second for all \
         clients together.\n\n\
         | backend | clients | items | enqueue items/s | dequeue items/s |\n|---|---:|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for backend in &report.backends {
        for result in &backend.queue {
            let _ = writeln!(
                out,
                "| {} | {} | {} / {} | {} | {} |",
                backend.kind,
                result.clients,
                result.enqueued.0,
                result.dequeued.0,
                fmt_rate(result.enqueue_rate()),
                fmt_rate(result.dequeue_rate()),
            );
            if let Some(error) = &result.error {
                notes.push(format!(
                    "{} with {} clients: {error}",
                    backend.kind, result.clients
                ));
            }
        }
    }
    notes_list(out, &notes);
}

fn scale_table(out: &mut String, report: &Report, plots: bool) {
    crate::scale::report::section(out, report, plots);
}

fn stm_table(out: &mut String, report: &Report) {
    if report.backends.iter().all(|backend| backend.stm.is_empty()) {
        return;
    }
    let _ = writeln!(
        out,
        "## STM\n\n\
         Bank transfers (half of a random account's balance to another of 5 accounts opened \
         at 100; the sum is checked to still be 500 afterwards) by N concurrent workers, each \
         its own connection, through `<dyn Stm>::atomically_with`, which reports the attempts \
         each commit took.\n\n\
         | backend | workers | isolation | transfers | transfers/s | retries per commit |\n\
         |---|---:|---|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for backend in &report.backends {
        for result in &backend.stm {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.2} |",
                backend.kind,
                result.workers,
                result
                    .isolation
                    .map_or("—".to_owned(), |level| level.to_string()),
                result.commits,
                fmt_rate(result.rate()),
                result.retries_per_commit(),
            );
            if let Some(error) = &result.error {
                notes.push(format!(
                    "{} with {} workers: {error}",
                    backend.kind, result.workers
                ));
            }
        }
    }
    notes_list(out, &notes);
}

fn aggregate_targets(out: &mut String, report: &Report) {
    for backend in &report.backends {
        let Some(aggregate) = &backend.aggregate else {
            continue;
        };
        let (Some(library), Some(raw)) = (&aggregate.library, &aggregate.raw) else {
            continue;
        };
        let measured = format!(
            "{} vs {} cycles/s raw",
            fmt_rate(library.rate()),
            fmt_rate(raw.rate())
        );
        let _ = match aggregate.ratio() {
            Some(factor) => writeln!(
                out,
                "| {} clients each cycling its own lock: aggregate ≥ {AGGREGATE_TARGET}× as many raw clients | {} | {measured}: ×{factor:.2} | {} |",
                aggregate.clients,
                backend.kind,
                verdict(factor >= AGGREGATE_TARGET)
            ),
            None => writeln!(
                out,
                "| {} clients each cycling its own lock: aggregate ≥ {AGGREGATE_TARGET}× as many raw clients | {} | {measured} | not measured |",
                aggregate.clients, backend.kind
            ),
        };
    }
}

fn residue_targets(out: &mut String, report: &Report) {
    for backend in &report.backends {
        let Some(residue) = &backend.residue else {
            continue;
        };
        let (measured, result) = match residue.verdict() {
            Some((met, text)) => (text, verdict(met).to_owned()),
            None => (
                residue.error.clone().unwrap_or_else(|| "—".into()),
                "not measured".to_owned(),
            ),
        };
        let _ = writeln!(
            out,
            "| a released, unused name leaves nothing behind (or a bounded amount), tokens still monotonic ({} names) | {} | {} | {result} |",
            residue.locked,
            backend.kind,
            measured.replace('|', "\\|")
        );
    }
}

fn aggregate_table(out: &mut String, report: &Report) {
    let measured: Vec<_> = report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.aggregate.as_ref()?)))
        .collect();
    let Some((_, first)) = measured.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "## Many clients, each its own lock\n\n\
         {} clients at once, each cycling lock+unlock back to back on a lock name of its \
         own, each its own connection; beside them, as many clients running the raw \
         sequence of the cycle table on the same store, and as many running the raw \
         sequence plus the step distsync takes there (in italics: the cycle table's \
         diagnostic row; on Redis distsync's own scripts without the library). The sides \
         take turns in {} rounds of {} ms each (each round starting with the next side), so \
         that load on the machine hits all alike. cycles/s is for all clients of a side \
         together; *distsync ÷ side* is distsync's rate over that side's (target ≥ \
         {AGGREGATE_TARGET} against raw), with the lowest and highest ratio of a single \
         round.\n\n\
         | backend | side | clients | cycles | cycles/s | distsync ÷ side | per-round range | setup |\n\
         |---|---|---:|---:|---:|---:|---|---|",
        first.clients,
        first.rounds,
        first.burst.as_millis()
    );
    let mut notes = Vec::new();
    for (kind, aggregate) in &measured {
        let rows = [
            (aggregate.library.as_ref(), aggregate.setup.as_str()),
            (aggregate.raw.as_ref(), "one connection (client) each"),
            (
                aggregate.diagnostic.as_ref(),
                "one connection (client) each",
            ),
        ];
        for (index, (side, setup)) in rows.into_iter().enumerate() {
            let Some(side) = side else {
                continue;
            };
            let label = match index {
                0 => format!("**{}**", side.label),
                1 => side.label.clone(),
                _ => format!("_{}_", side.label),
            };
            let versus = (index > 0 && side.rate() > 0.0)
                .then(|| {
                    aggregate
                        .library
                        .as_ref()
                        .map(|library| library.rate() / side.rate())
                })
                .flatten()
                .map_or("—".to_owned(), |ratio| format!("×{ratio:.2}"));
            let range = (index > 0)
                .then(|| {
                    let library = &aggregate.library.as_ref()?.round_rates;
                    let ratios: Vec<f64> = library
                        .iter()
                        .zip(&side.round_rates)
                        .filter(|(_, theirs)| **theirs > 0.0)
                        .map(|(ours, theirs)| ours / theirs)
                        .collect();
                    Some((
                        ratios.iter().copied().reduce(f64::min)?,
                        ratios.iter().copied().reduce(f64::max)?,
                    ))
                })
                .flatten()
                .map_or("—".to_owned(), |(low, high)| {
                    format!("×{low:.2} – ×{high:.2}")
                });
            let _ = writeln!(
                out,
                "| {kind} | {label} | {} | {} | {} | {versus} | {range} | {setup} |",
                side.clients,
                side.cycles,
                fmt_rate(side.rate()),
            );
            if let Some(error) = &side.error {
                notes.push(format!("{kind} / {}: {error}", side.label));
            }
        }
        for note in &aggregate.notes {
            notes.push(format!("{kind}: {note}"));
        }
        if let Some(error) = &aggregate.error {
            notes.push(format!("{kind}: {error}"));
        }
        if *kind == crate::target::BackendKind::Memory {
            notes.push("memory: no raw clients (no client crate beneath the in-process store), so no ratio".into());
        }
    }
    notes_list(out, &notes);
}

fn residue_table(out: &mut String, report: &Report) {
    let measured: Vec<_> = report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.residue.as_ref()?)))
        .collect();
    let Some((_, first)) = measured.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "## What released lock names leave in the store\n\n\
         {} distinct lock names, each locked and released once by {} concurrent sessions \
         (closed at the end), in a namespace of the run's own (removed afterwards). \
         *before* and *after* count the keys (etcd: the prefix; Redis: `SCAN MATCH \
         {{<namespace>*`; memory: the store) or the rows of every table of the run's \
         schema (PostgreSQL). Store bytes: etcd's db size, Redis's `used_memory` (the \
         whole server, so other clients' work shows too), PostgreSQL's \
         `pg_total_relation_size` of the schema's tables (deleted rows keep their space \
         until a vacuum). *after clean-up*: PostgreSQL after `sweep()` with `name_idle` \
         of 1 s; Redis has nothing to trigger (its keys expire by themselves), so the \
         keys left and their TTLs are shown. *tokens*: the first name's token when first \
         locked, and when locked again after the clean-up (on Redis after deleting that \
         name's keys, as their expiry would).\n\n\
         | backend | namespace | names | time | before | after | per name | store bytes before → after | also | after clean-up | tokens |\n\
         |---|---|---:|---:|---:|---:|---:|---|---|---|---|",
        first.names,
        first.tasks
    );
    let mut notes = Vec::new();
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "—".into());
    for (kind, residue) in &measured {
        let unit = residue.unit;
        let per_name = residue
            .left_behind()
            .filter(|_| residue.locked > 0)
            .map(|left| format!("{:.2}", left as f64 / residue.locked as f64));
        let bytes = match (residue.bytes_before, residue.bytes_after) {
            (Some(before), Some(after)) => format!(
                "{} → {} ({:+.1} kB; {})",
                kib(before),
                kib(after),
                (after - before) as f64 / 1024.0,
                residue.bytes_measure
            ),
            _ => "—".into(),
        };
        let extra = residue
            .bytes_extra
            .map_or("—".to_owned(), |(what, before, after)| {
                format!("{what}: {} → {}", kib(before), kib(after))
            });
        let cleanup = residue.cleanup.as_ref().map(|cleanup| {
            let mut text = format!(
                "{} {unit} left",
                cleanup.left.map_or("?".to_owned(), |left| left.to_string())
            );
            let nonzero: Vec<String> = cleanup
                .detail
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|(table, count)| format!("{table} {count}"))
                .collect();
            if !nonzero.is_empty() {
                text.push_str(&format!(" ({})", nonzero.join(", ")));
            }
            if let Some(no_ttl) = cleanup.no_ttl {
                text.push_str(&format!(", {no_ttl} without TTL"));
            }
            if let Some((low, high)) = cleanup.ttl_range {
                text.push_str(&format!(
                    ", PTTL {} – {}",
                    crate::residue::fmt_secs(low),
                    crate::residue::fmt_secs(high)
                ));
            }
            if let Some(bound) = cleanup.expire_bound {
                text.push_str(&format!(
                    " (FAIR_IDLE_MS {})",
                    crate::residue::fmt_secs(bound)
                ));
            }
            text.push_str(&format!("; {}", cleanup.how));
            text
        });
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} | {} | {} | {bytes} | {extra} | {} | {} |",
            residue.namespace,
            residue.locked,
            or_dash(residue.elapsed.map(fmt_duration)),
            or_dash(residue.before.map(|n| format!("{n} {unit}"))),
            or_dash(residue.after.map(|n| format!("{n} {unit}"))),
            or_dash(per_name),
            or_dash(cleanup),
            or_dash(
                residue
                    .tokens
                    .map(|(first, again)| format!("{first} → {again}"))
            ),
        );
        if !residue.detail.is_empty() {
            let detail: Vec<String> = residue
                .detail
                .iter()
                .filter(|(_, before, after)| before != after || *after > 0)
                .map(|(what, before, after)| format!("{what} {before} → {after}"))
                .collect();
            notes.push(format!(
                "{kind}: {} {}",
                if unit == "rows" {
                    "rows per table"
                } else {
                    "keys per kind"
                },
                detail.join(", ")
            ));
        }
        if residue.locked < residue.names {
            notes.push(format!(
                "{kind}: only {} of {} names were locked",
                residue.locked, residue.names
            ));
        }
        if let Some(error) = &residue.error {
            notes.push(format!("{kind}: {error}"));
        }
    }
    notes_list(out, &notes);
}

fn kib(bytes: i64) -> String {
    format!("{:.1} kB", bytes as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kept_analysis() {
        let previous =
            format!("# B\n\n## Analysis\n\n{ANALYSIS_BEGIN}\nkept *text*\n{ANALYSIS_END}\n");
        assert_eq!(analysis_of(&previous), Some("kept *text*"));
        assert_eq!(analysis_of("# B\n"), None);
    }
}
