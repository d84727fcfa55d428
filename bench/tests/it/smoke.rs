//! A `--quick` run of the bench binary against `memory://` only: it must fill the
//! tables between their markers and keep every hand-written line around them.

use crate::common;

use std::process::Command;

#[test]
fn quick_run_on_memory_fills_the_tables_and_keeps_the_prose() {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(
        out.path().join("BENCHMARKS.md"),
        "# Title\n\nKEEP THIS NOTE\n\n<!-- bench:cycle -->\nold figures\n<!-- /bench:cycle -->\n\n\
         AND THIS ONE\n",
    )
    .unwrap();
    let (report, stdout) = common::run_bench(&["--quick", "--backends", "memory"], out.path());
    common::assert_contains_all(
        &report,
        &[
            "# Title\n\nKEEP THIS NOTE\n\n<!-- bench:cycle -->\n| backend | implementation |",
            "| backend | implementation | cycles | p50 | p99 | ops/s | vs raw | vs distsync |",
            "<!-- /bench:cycle -->\n\nAND THIS ONE\n",
            "| memory | **distsync** | 20 |",
            "| memory | 1 | 5 |",
            "| memory | 3 | 5 |",
            "| memory | 8 | SerializableSnapshot | 16 |",
            "## Machine and run\n\n<!-- bench:run -->\n",
        ],
    );
    assert!(!report.contains("old figures"), "the tables are rewritten");
    // The contended table and the plots beside the tables.
    common::assert_contains_all(
        &report,
        &[
            "<!-- bench:contended -->\n| backend | implementation | clients | grants |",
            "| memory | **distsync** | 2 |",
            "| memory | **distsync** | 64 |",
            "![Uncontended cycle p50 per store",
            "](bench/cycle.svg)",
            "](bench/handoff.svg)",
            "](bench/contended.svg)",
        ],
    );
    for plot in ["cycle.svg", "handoff.svg", "contended.svg"] {
        let svg = std::fs::read_to_string(out.path().join("bench").join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("memory"),
            "{plot}: {svg}"
        );
    }
    assert!(
        stdout.contains("| memory | **distsync** |"),
        "tables on stdout: {stdout}"
    );
}

#[test]
fn no_backend_is_an_error_that_says_why() {
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-bench"))
        .args(["--quick", "--backends", "etcd"])
        .env_remove("DISTSYNC_ETCD_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("etcd:")
            && (stderr.contains("DISTSYNC_ETCD_URL") || stderr.contains("--features etcd")),
        "{stderr}"
    );
}

#[test]
fn the_guard_without_a_readable_baseline_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("baseline.json");
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-bench"))
        .args(["--guard", "--baseline"])
        .arg(&missing)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reading") && stderr.contains("baseline.json"),
        "{stderr}"
    );
}

#[test]
fn the_guard_fails_a_baseline_row_it_cannot_measure() {
    // A baseline that expects an etcd ratio, and no etcd to measure (URL removed, or
    // the backend not compiled in): the guard must fail, not pass silently.
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    std::fs::write(
        &baseline,
        r#"{"command":"test","written":"now","commit":"x","machine":"m","note":"n",
            "ratios":[{"backend":"etcd","against":"raw","ratio":1.2,"noise":0.02,"runs":[1.2]}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-bench"))
        .args(["--guard", "--backends", "etcd", "--baseline"])
        .arg(&baseline)
        .env_remove("DISTSYNC_ETCD_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("| etcd | raw | — | ×1.200 |") && stdout.contains("**NOT MEASURED**"),
        "{stdout}"
    );
}
