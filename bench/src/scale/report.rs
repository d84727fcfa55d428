//! The "At scale" section of the report: the figures with everything held and
//! waiting, the cost against the number of holds, a verdict per backend on whether
//! each cost grows linearly or worse (computed from the figures), and the hand-offs
//! with the holds held.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ScaleResult, SizePoint};
use crate::run::Report;
use crate::stats::{fmt_duration, fmt_rate};
use crate::target::BackendKind;

/// A per-unit cost (per hold, per session) at the largest step within this factor of
/// the one at the smallest step counts as linear growth of the total; above it, worse.
pub const LINEAR_TOLERANCE: f64 = 1.5;

/// Hand-off latency at the most waiters within this factor of the one at the fewest
/// counts as flat (no herd).
pub const FLAT_HANDOFF: f64 = 2.0;

/// How a total grows, from its per-unit cost at the smallest and the largest step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The per-unit cost fell by more than [`LINEAR_TOLERANCE`]: fixed costs spread
    /// over more units.
    Sublinear,
    /// The per-unit cost stayed within [`LINEAR_TOLERANCE`].
    Linear,
    /// The per-unit cost rose by more than [`LINEAR_TOLERANCE`].
    Superlinear,
}

impl Growth {
    /// The growth whose per-unit cost went from `small` to `large`.
    pub fn of(small: f64, large: f64) -> Option<Self> {
        if !(small > 0.0 && large >= 0.0 && small.is_finite() && large.is_finite()) {
            return None;
        }
        let factor = large / small;
        Some(if factor > LINEAR_TOLERANCE {
            Self::Superlinear
        } else if factor < 1.0 / LINEAR_TOLERANCE {
            Self::Sublinear
        } else {
            Self::Linear
        })
    }

    fn words(self) -> &'static str {
        match self {
            Self::Sublinear => "better than linear (fixed costs spread over more holds)",
            Self::Linear => "linear",
            Self::Superlinear => "**worse than linear**",
        }
    }
}

/// Writes the section (nothing when no backend ran the case). `plots`: whether the
/// scale plots were written beside the report.
pub fn section(out: &mut String, report: &Report, plots: bool) {
    let scaled: Vec<(BackendKind, &ScaleResult)> = report
        .backends
        .iter()
        .filter_map(|backend| Some((backend.kind, backend.scale.as_ref()?)))
        .collect();
    if scaled.is_empty() {
        return;
    }
    let plan = &report.plan;
    let sizes: Vec<String> = plan.scale_sizes.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        out,
        "## At scale\n\n\
         From one process and one coordinator per backend: sessions each holding a lock \
         of its own, grown in steps ({} holds; the earlier steps' holds stay held), then \
         {} more sessions waiting, one on each of {} of those locks; then the hand-off on \
         one lock with 1 to {} waiters while the holds stay held. Sessions have a TTL of \
         {} s, so each renews every {:.1} s; at each step the keepalive requests are counted \
         at the store over one renewal interval with nothing else running (every session \
         renews once in it; at the default 60 s TTL the rate per second is a quarter of \
         the one at 15 s, the requests per session per renewal are the same). Sessions and \
         locks are taken 64 at a time; times are summed over the steps. Client memory is \
         `VmRSS` of the bench process, per hold above the memory with the coordinator \
         connected. Store connections: etcd, this process's established TCP connections \
         to etcd (`/proc`); Redis, `connected_clients` (the counting connection left \
         out); PostgreSQL, `pg_stat_activity` rows of the database (likewise). Keepalive \
         requests: etcd, LeaseKeepAlive messages received (`/metrics`); Redis, `EVALSHA` \
         and `EVAL` calls (`INFO commandstats`; a waiter's safety-net re-check is one \
         too); PostgreSQL, transactions of the database (`pg_stat_database`; renewals \
         are batched, one statement for every session due). The memory backend has no \
         store to count.\n",
        sizes.join(", "),
        plan.scale_waiting,
        plan.scale_waiting,
        plan.scale_handoff_waiters.last().copied().unwrap_or(1),
        plan.scale_ttl.as_secs(),
        plan.scale_ttl.as_secs_f64() / 3.0,
    );
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "—".into());
    let mb = |kb: Option<u64>| kb.map(|kb| format!("{:.1} MB", kb as f64 / 1024.0));
    let count = |n: Option<i64>| n.map(|n| n.to_string());
    let _ = writeln!(
        out,
        "| backend | held | waiting | store connections before / held and waiting / during hand-offs | client RSS before → held and waiting | open sessions | acquire all | keepalive requests/s, all held | release to all waiters holding |\n\
         |---|---:|---:|---|---|---:|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for (kind, scale) in &scaled {
        let largest = scale.largest();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} / {} / {} | {} → {} | {} | {} | {} | {} |",
            largest.map_or(0, |point| point.holds),
            scale.waiting,
            or_dash(count(scale.connections_before)),
            or_dash(count(scale.connections_peak)),
            or_dash(count(scale.connections_handoff)),
            or_dash(mb(scale.rss_before_kb)),
            or_dash(mb(scale.rss_peak_kb)),
            or_dash(scale.open_sessions.map(fmt_duration)),
            or_dash(scale.acquire_all.map(fmt_duration)),
            or_dash(
                largest
                    .and_then(|point| point.keepalive)
                    .map(|requests| fmt_rate(requests.per_sec()))
            ),
            or_dash(scale.release_to_waiters.map(fmt_duration)),
        );
        if let Some(max) = scale.max_connections {
            notes.push(format!("{kind}: the server's max_connections is {max}"));
        }
        if let Some(error) = &scale.error {
            notes.push(format!("{kind}: stopped early: {error}"));
        }
    }
    crate::report::notes_list(out, &notes);

    let _ = writeln!(
        out,
        "### Cost against the number of holds\n\n\
         | backend | holds | open sessions (per session) | acquire all (per hold) | client RSS (per hold) | store connections | keepalive requests/s (per session per renewal interval) |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for (kind, scale) in &scaled {
        for point in &scale.sizes {
            let _ = writeln!(
                out,
                "| {kind} | {} | {} ({}) | {} ({}) | {} ({}) | {} | {} |",
                point.holds,
                fmt_duration(point.open_sessions),
                fmt_duration(point.open_per_session()),
                fmt_duration(point.acquire_all),
                fmt_duration(point.acquire_per_hold()),
                or_dash(mb(point.rss_kb)),
                or_dash(
                    point
                        .rss_per_hold_kb(scale.rss_connected_kb)
                        .map(|kb| format!("{kb:.2} kB"))
                ),
                or_dash(count(point.connections)),
                match (
                    point.keepalive,
                    point.keepalive_per_session(scale.renewal_interval())
                ) {
                    (Some(requests), Some(per)) =>
                        format!("{} ({per:.2})", fmt_rate(requests.per_sec())),
                    _ => "—".into(),
                },
            );
        }
    }
    out.push('\n');
    if plots {
        for (path, what) in super::plots::FILES {
            let _ = writeln!(out, "![{what}]({path})\n");
        }
    }
    let _ = writeln!(
        out,
        "**Does it grow linearly, or worse?** Computed from the table: a cost per hold (or \
         per session) at the largest step within ×{LINEAR_TOLERANCE} of the one at the \
         smallest step is linear growth of the total; a hand-off latency at the most \
         waiters within ×{FLAT_HANDOFF} of the one at one waiter is flat.\n"
    );
    for (kind, scale) in &scaled {
        let _ = writeln!(out, "- **{kind}**: {}", growth_sentence(scale));
    }
    out.push('\n');

    let _ = writeln!(
        out,
        "### Hand-off with the holds held\n\n\
         | backend | waiters | hand-offs | p50 | p99 |\n|---|---:|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for (kind, scale) in &scaled {
        for result in &scale.handoff {
            match result.samples.summary() {
                Some(summary) => {
                    let _ = writeln!(
                        out,
                        "| {kind} | {} | {} | {} | {} |",
                        result.waiters,
                        summary.count,
                        fmt_duration(summary.p50),
                        fmt_duration(summary.p99),
                    );
                }
                None => {
                    let _ = writeln!(out, "| {kind} | {} | — | — | — |", result.waiters);
                }
            }
            if let Some(error) = &result.error {
                notes.push(format!("{kind} with {} waiters: {error}", result.waiters));
            }
        }
    }
    crate::report::notes_list(out, &notes);
}

/// One sentence per measure: its per-unit cost at the smallest and largest step, the
/// factor, and the verdict.
pub fn growth_sentence(scale: &ScaleResult) -> String {
    let (Some(small), Some(large)) = (scale.sizes.first(), scale.sizes.last()) else {
        return "not measured".into();
    };
    if small.holds == large.holds {
        return format!("measured at {} holds only, no growth to judge", small.holds);
    }
    let mut parts = Vec::new();
    let judged =
        |what: &str, unit: &dyn Fn(f64) -> String, at: &dyn Fn(&SizePoint) -> Option<f64>| {
            let (a, b) = (at(small)?, at(large)?);
            let growth = Growth::of(a, b)?;
            Some(format!(
                "{what} {} at {} holds and {} at {} (×{:.2}): {}",
                unit(a),
                small.holds,
                unit(b),
                large.holds,
                b / a,
                growth.words()
            ))
        };
    let time = |seconds: f64| fmt_duration(Duration::from_secs_f64(seconds));
    parts.extend(judged(
        "acquiring costs",
        &|s| format!("{} per hold", time(s)),
        &|p| Some(p.acquire_per_hold().as_secs_f64()),
    ));
    parts.extend(judged("opening a session", &time, &|p| {
        Some(p.open_per_session().as_secs_f64())
    }));
    parts.extend(judged(
        "client memory",
        &|kb| format!("{kb:.2} kB per hold"),
        &|p| p.rss_per_hold_kb(scale.rss_connected_kb),
    ));
    let interval = scale.renewal_interval();
    parts.extend(judged(
        "keepalive",
        &|per| format!("{per:.2} requests per session per renewal"),
        &|p| p.keepalive_per_session(interval),
    ));
    if let (Some(a), Some(b)) = (small.connections, large.connections) {
        parts.push(format!(
            "store connections {a} at {} holds and {b} at {}{}",
            small.holds,
            large.holds,
            if b <= a { " (constant)" } else { "" }
        ));
    }
    let handoffs: Vec<_> = scale
        .handoff
        .iter()
        .filter_map(|result| Some((result.waiters, result.samples.summary()?)))
        .collect();
    if let (Some((few, first)), Some((most, last))) = (handoffs.first(), handoffs.last()) {
        if most > few {
            let p50 = last.p50.as_secs_f64() / first.p50.as_secs_f64().max(1e-12);
            let p99 = last.p99.as_secs_f64() / first.p99.as_secs_f64().max(1e-12);
            let flat = |factor: f64| {
                if factor <= FLAT_HANDOFF {
                    "flat"
                } else {
                    "**grows with the line**"
                }
            };
            parts.push(format!(
                "hand-off p50 {} at {few} waiter{} and {} at {most} (×{p50:.2}, {}), p99 ×{p99:.2} ({})",
                fmt_duration(first.p50),
                if *few == 1 { "" } else { "s" },
                fmt_duration(last.p50),
                flat(p50),
                flat(p99)
            ));
        }
    }
    if parts.is_empty() {
        "nothing to judge".into()
    } else {
        parts.join("; ") + "."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_judged_from_the_per_unit_costs() {
        assert_eq!(Growth::of(1.0, 1.4), Some(Growth::Linear));
        assert_eq!(Growth::of(1.0, 0.7), Some(Growth::Linear));
        assert_eq!(Growth::of(1.0, 1.6), Some(Growth::Superlinear));
        assert_eq!(Growth::of(1.0, 0.5), Some(Growth::Sublinear));
        assert_eq!(Growth::of(0.0, 1.0), None);
        assert_eq!(Growth::of(f64::NAN, 1.0), None);
    }

    #[test]
    fn the_sentence_states_factors_and_verdicts() {
        let point = |holds: usize, acquire_ms: u64, rss_kb: u64| SizePoint {
            holds,
            open_sessions: Duration::from_millis(holds as u64),
            acquire_all: Duration::from_millis(acquire_ms),
            rss_kb: Some(rss_kb),
            connections: Some(3),
            keepalive: None,
        };
        let scale = ScaleResult {
            ttl: Duration::from_secs(15),
            rss_connected_kb: Some(1_000),
            // 1 ms per hold at 100, 3 ms per hold at 10,000; 4 kB per hold at both.
            sizes: vec![point(100, 100, 1_400), point(10_000, 30_000, 41_000)],
            ..ScaleResult::default()
        };
        let sentence = growth_sentence(&scale);
        assert!(
            sentence.contains("acquiring costs 1.00 ms per hold at 100 holds and 3.00 ms per hold at 10000 (×3.00): **worse than linear**"),
            "{sentence}"
        );
        assert!(
            sentence.contains("client memory 4.00 kB per hold at 100 holds and 4.00 kB per hold at 10000 (×1.00): linear"),
            "{sentence}"
        );
        assert!(sentence.contains("store connections 3 at 100 holds and 3 at 10000 (constant)"));
    }
}
