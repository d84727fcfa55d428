//! The aggregate case with tiny counts on `memory://` (no server needed):
//! the bench binary's tables must have their fields filled and sane, and the library
//! functions must return figures that add up; the fair and the unfair lock each with
//! its own ratios, the PostgreSQL targets judged on the fair lock's.

use std::time::Duration;

use crate::common::{self, report, rows};

use clap::Parser;
use distsync_bench::aggregate::{AggregateResult, Throughput};
use distsync_bench::args::{Args, Plan};
use distsync_bench::target::{BackendKind, Target};

fn plan(extra: &[&str]) -> Plan {
    let mut argv = vec!["distsync-bench", "--quick"];
    argv.extend_from_slice(extra);
    Plan::from_args(&Args::parse_from(argv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_on_memory_counts_cycles_of_every_client() {
    let plan = plan(&["--aggregate-clients", "4", "--aggregate-ms", "200"]);
    let target = Target::connect(BackendKind::Memory, "memory://".into())
        .await
        .unwrap();
    let result = distsync_bench::aggregate::run(&target, "test/aggregate", &plan).await;
    assert_eq!(result.error, None);
    assert_eq!(result.clients, 4);
    assert!(result.raw.is_none(), "memory has no raw clients");
    assert_eq!(result.ratio(), None);
    let library = result.library.expect("distsync ran");
    assert_eq!(library.error, None);
    assert_eq!(library.clients, 4);
    assert_eq!(library.round_rates.len(), plan.aggregate_rounds);
    assert!(library.cycles >= 4, "every client cycled: {library:?}");
    // The measured time is the bursts', each at least its share of the time asked.
    assert!(library.elapsed >= plan.aggregate_time, "{library:?}");
    assert!(library.elapsed < plan.aggregate_time * 20, "{library:?}");
    let rate = library.rate();
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    let unfair = result.unfair.expect("the unfair lock ran");
    assert_eq!(unfair.error, None);
    assert_eq!(unfair.label, "distsync, unfair");
    assert_eq!(unfair.clients, 4);
    assert_eq!(unfair.round_rates.len(), plan.aggregate_rounds);
    assert!(unfair.cycles >= 4, "every client cycled: {unfair:?}");
}

#[test]
fn quick_run_on_memory_writes_the_table_and_target() {
    let out = tempfile::tempdir().unwrap();
    let (report, _) = common::run_bench(
        &[
            "--quick",
            "--backends",
            "memory",
            "--cases",
            "aggregate",
            "--aggregate-clients",
            "8",
            "--aggregate-ms",
            "200",
        ],
        out.path(),
    );
    common::assert_contains_all(
        &report,
        &[
            "## Many clients, each its own lock",
            "| memory | **distsync** | 8 |",
            "| memory | **distsync, unfair** | 8 |",
        ],
    );
    let row = report
        .lines()
        .find(|line| line.starts_with("| memory | **distsync** | 8 |"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let cycles: u64 = cells[4].parse().unwrap();
    assert!(cycles >= 8, "{row}");
}

/// A side of `clients` clients that made `rate` cycles per second in each of two
/// one-second rounds.
fn side(label: &str, rate: f64) -> Throughput {
    Throughput {
        label: label.into(),
        clients: 64,
        cycles: (rate * 2.0) as usize,
        elapsed: Duration::from_secs(2),
        round_rates: vec![rate, rate],
        error: None,
    }
}

#[test]
fn the_throughput_targets_judge_the_fair_lock_and_show_the_unfair_ones_ratios() {
    // The unfair lock would meet the bound, the fair one does not: the verdicts are the
    // fair lock's (durable grants bound the ratio to distributed-lock alone).
    let report = report(BackendKind::Postgres, |backend| {
        backend.aggregate = Some(AggregateResult {
            clients: 64,
            library: Some(side("distsync", 100.0)),
            unfair: Some(side("distsync, unfair", 800.0)),
            raw: Some(side("raw", 1000.0)),
            peer: Some(side("distributed-lock", 400.0)),
            ..AggregateResult::default()
        });
    });
    let text = distsync_bench::report::text(&report);
    let table = rows(&text, "Many clients, each its own lock", "| postgres");
    assert_eq!(table.len(), 4, "{text}");
    assert!(
        table[0].starts_with("| postgres | **distsync** | 64 | 200 |")
            && table[0].contains("| ×0.10 (×0.10 – ×0.10) | ×0.25 (×0.25 – ×0.25) |"),
        "{text}"
    );
    assert!(
        table[1].starts_with("| postgres | **distsync, unfair** | 64 | 1600 |")
            && table[1].contains("| ×0.80 (×0.80 – ×0.80) | ×2.00 (×2.00 – ×2.00) |"),
        "{text}"
    );
    assert!(table[2].contains("| — | — |"), "{text}");
    assert!(table[3].contains("| — | — |"), "{text}");
    let targets = rows(&text, "Targets by guarantee class", "| postgres");
    let target = |part: &str| {
        *targets
            .iter()
            .find(|row| row.contains(part))
            .unwrap_or_else(|| panic!("no target `{part}` in {text}"))
    };
    assert!(
        target("own fair lock: cycles/s ÷ 64 raw clients' (no bound)")
            .ends_with("| ×0.10 | figure only |"),
        "{text}"
    );
    assert!(
        target("own fair lock: cycles/s ÷ 64 distributed-lock clients' ≥ ×1.00")
            .ends_with("| ×0.25 | **missed** |"),
        "{text}"
    );
    assert!(
        target("own unfair lock: cycles/s ÷ 64 raw clients' (no bound)")
            .ends_with("| ×0.80 | figure only |"),
        "{text}"
    );
    assert!(
        target("own unfair lock: cycles/s ÷ 64 distributed-lock clients' (no bound)")
            .ends_with("| ×2.00 | figure only |"),
        "{text}"
    );
}

#[test]
fn a_side_that_stopped_says_why_in_its_target() {
    let report = report(BackendKind::Postgres, |backend| {
        let mut fair = side("distsync", 0.0);
        fair.error = Some("64 of 64 clients stopped: the session was lost".into());
        backend.aggregate = Some(AggregateResult {
            clients: 64,
            library: Some(fair),
            raw: Some(side("raw", 1000.0)),
            error: Some("distsync's unfair clients: refused".into()),
            ..AggregateResult::default()
        });
    });
    let text = distsync_bench::report::text(&report);
    let targets = rows(&text, "Targets by guarantee class", "| postgres");
    let fair = targets
        .iter()
        .find(|row| row.contains("own fair lock: cycles/s ÷ 64 raw clients'"))
        .unwrap();
    assert!(
        fair.ends_with("| — | not measured: 64 of 64 clients stopped: the session was lost |"),
        "{text}"
    );
    let unfair = targets
        .iter()
        .find(|row| row.contains("own unfair lock: cycles/s ÷ 64 raw clients'"))
        .unwrap();
    assert!(
        unfair.ends_with("| — | not measured: distsync's unfair clients: refused |"),
        "{text}"
    );
}
