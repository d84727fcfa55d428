//! What the bench's integration tests share: running the binary, a report of figures
//! made by hand, and reading the sections of either.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use distsync_bench::args::{Args, Plan};
use distsync_bench::machine::Machine;
use distsync_bench::run::{BackendReport, Report};
use distsync_bench::target::BackendKind;

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

/// A report of one backend of `kind`, with the figures `fill` gives it (none else).
pub(crate) fn report(kind: BackendKind, fill: impl FnOnce(&mut BackendReport)) -> Report {
    let mut backend = BackendReport::new(kind, "memory://", None);
    fill(&mut backend);
    Report {
        machine: Machine::read(),
        arguments: Vec::new(),
        plan: Plan::from_args(&Args::parse_from(["distsync-bench", "--quick"])),
        backends: vec![backend],
        skipped: Vec::new(),
        elapsed: Duration::ZERO,
    }
}

/// The lines of section `title` of `text` that start with `start`.
pub(crate) fn rows<'a>(text: &'a str, title: &str, start: &str) -> Vec<&'a str> {
    text.split(&format!("## {title}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the section")
        .lines()
        .filter(|line| line.starts_with(start))
        .collect()
}
