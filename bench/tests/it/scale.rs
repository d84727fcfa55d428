//! The scale case with tiny counts on the memory backend (no server needed): every
//! step is measured, the waiters all get their lock, the hand-off rows are there, and
//! the locks are left free.

use crate::common;

use clap::Parser;
use distsync_bench::args::{Args, Plan};
use distsync_bench::scale;
use distsync_bench::target::{BackendKind, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_on_memory_fills_every_field() {
    let plan = Plan::from_args(&Args::parse_from([
        "distsync-bench",
        "--quick",
        "--scale-sizes",
        "3,30,60",
        "--scale-waiting",
        "12",
        "--scale-waiters",
        "1,4",
        "--handoffs",
        "5",
    ]));
    let target = Target::connect(BackendKind::Memory, "memory://scale-test".into())
        .await
        .unwrap();
    let result = scale::run(&target, "t", &plan).await;
    assert!(result.error.is_none(), "{:?}", result.error);
    assert_eq!(result.holds, 60);
    assert_eq!(result.waiting, 12);
    let holds: Vec<usize> = result.sizes.iter().map(|point| point.holds).collect();
    assert_eq!(holds, [3, 30, 60]);
    let mut previous = None;
    for point in &result.sizes {
        assert!(point.acquire_all > std::time::Duration::ZERO, "{point:?}");
        assert!(point.open_sessions > std::time::Duration::ZERO, "{point:?}");
        assert!(point.rss_kb.is_some_and(|kb| kb > 0), "{point:?}");
        // The in-process store has no connections or requests to count.
        assert_eq!(point.connections, None);
        assert_eq!(point.keepalive, None);
        if let Some(previous) = previous {
            // Times are summed over the steps.
            assert!(point.acquire_all >= previous, "{point:?}");
        }
        previous = Some(point.acquire_all);
    }
    assert_eq!(
        result.acquire_all,
        result.sizes.last().map(|p| p.acquire_all)
    );
    assert!(result.release_to_waiters.is_some());
    assert!(result.rss_before_kb.is_some() && result.rss_peak_kb.is_some());
    let waiters: Vec<usize> = result.handoff.iter().map(|row| row.waiters).collect();
    assert_eq!(waiters, [1, 4]);
    for row in &result.handoff {
        assert!(row.error.is_none(), "{:?}", row.error);
        assert_eq!(row.samples.len(), 5, "{} waiters", row.waiters);
    }

    // Everything was released: every lock of the case is free again (the case
    // connects a coordinator of its own to the same named in-process store).
    let status = target.coordinator.status("t/scale/").await.unwrap();
    assert!(status.lines.is_empty(), "{status:?}");
}

/// Through the binary: the case runs in a child process of its own and the report
/// gets its three tables.
#[test]
fn the_binary_reports_the_scale_case() {
    let out = tempfile::tempdir().unwrap();
    let (report, _) = common::run_bench(
        &[
            "--quick",
            "--cases",
            "scale",
            "--backends",
            "memory",
            "--scale-sizes",
            "4,40",
            "--scale-waiting",
            "8",
            "--scale-waiters",
            "1,3",
            "--handoffs",
            "4",
        ],
        out.path(),
    );
    common::assert_contains_all(
        &report,
        &[
            "## At scale",
            "| memory | 40 | 8 | — / — / — |",
            "## Cost against the number of holds",
            "| memory | 4 |",
            "| memory | 40 |",
            "## Hand-off with the holds held",
            "| memory | 3 | 4 |",
        ],
    );
    assert!(!report.contains("stopped early"), "{report}");
}
