//! The aggregate and residue cases with tiny counts on `memory://` (no server needed):
//! the bench binary's tables must have their fields filled and sane, and the library
//! functions must return figures that add up.

mod common;

use clap::Parser;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residue_on_memory_leaves_nothing_and_tokens_grow() {
    let plan = plan(&["--residue-names", "40"]);
    let target = Target::connect(BackendKind::Memory, "memory://".into())
        .await
        .unwrap();
    let result = distsync_bench::residue::run(&target, "test/residue", &plan).await;
    assert_eq!(result.error, None);
    assert_eq!((result.names, result.locked), (40, 40));
    assert_eq!(result.unit, "keys");
    assert_eq!(result.before, Some(0));
    assert_eq!(result.after, Some(0), "a released lock leaves no key");
    assert_eq!(result.left_after_cleanup(), Some(0));
    assert!(result.elapsed.is_some());
    let (first, again) = result.tokens.expect("the first name was locked twice");
    assert!(again > first, "{first} then {again}");
    let (met, text) = result.verdict().expect("a verdict");
    assert!(met, "{text}");
}

#[test]
fn quick_run_of_both_cases_on_memory_writes_their_tables() {
    let out = tempfile::tempdir().unwrap();
    let (report, _) = common::run_bench(
        &[
            "--quick",
            "--backends",
            "memory",
            "--cases",
            "aggregate,residue",
            "--aggregate-clients",
            "8",
            "--aggregate-ms",
            "200",
            "--residue-names",
            "50",
        ],
        out.path(),
    );
    common::assert_contains_all(
        &report,
        &["## Many clients, each its own lock",
        "| memory | **distsync** | 8 |",
        "## What released lock names leave in the store",
        "| memory | a fresh memory:// store | 50 |",
        "| a released, unused name leaves nothing behind (or a bounded amount), tokens still monotonic (50 names) | memory | 0 keys left; token ",],
    );
    let row = report
        .lines()
        .find(|line| line.starts_with("| memory | **distsync** | 8 |"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let cycles: u64 = cells[4].parse().unwrap();
    assert!(cycles >= 8, "{row}");
    let residue = report
        .lines()
        .find(|line| line.starts_with("| memory | a fresh memory:// store |"))
        .unwrap();
    assert!(residue.contains("| 0 keys | 0 keys | 0.00 |"), "{residue}");
    assert!(
        report.contains("| met |"),
        "the residue target is met on memory:\n{report}"
    );
}
