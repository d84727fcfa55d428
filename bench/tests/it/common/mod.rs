//! What the bench's integration tests share: running the binary and reading its report.

use std::path::Path;
use std::process::Command;

/// Runs the bench binary with `args` and `--out out`, asserts that it succeeded, and
/// returns the report it wrote (`out/BENCHMARKS.md`) and what it printed.
pub(crate) fn run_bench(args: &[&str], out: &Path) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report = std::fs::read_to_string(out.join("BENCHMARKS.md")).unwrap();
    (report, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Asserts that `report` contains every line part of `expected`.
pub(crate) fn assert_contains_all(report: &str, expected: &[&str]) {
    for expected in expected {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
}
