//! The aggregate case with tiny counts on `memory://` (no server needed):
//! the bench binary's tables must have their fields filled and sane, and the library
//! functions must return figures that add up.

use crate::common;

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
