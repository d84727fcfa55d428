//! The runner binary as a CI job runs it: against `memory://`, in the safe profile,
//! with a JUnit report beside the markdown matrix.

use std::path::PathBuf;
use std::process::Command;

/// A report path of this test run's own, removed when dropped.
struct Report(PathBuf);

impl Drop for Report {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_safe_run_on_memory_exits_0_and_writes_junit_testcases() {
    let report = Report(std::env::temp_dir().join(format!(
        "distsync-conformance-{}-report.xml",
        std::process::id()
    )));
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
        .args([
            "--backend",
            "memory://",
            "--profile",
            "safe",
            "--case",
            "lock_fifo_waiters",
            "--case",
            "server_restart_durable_state",
            "--junit",
        ])
        .arg(&report.0)
        .output()
        .expect("running the runner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let matrix = String::from_utf8_lossy(&output.stdout);
    assert!(matrix.starts_with("Profile: `safe`"), "{matrix}");
    assert!(matrix.contains("| not run |"), "{matrix}");
    assert!(
        stderr.contains("[1/2] memory lock_fifo_waiters: holds ("),
        "{stderr}"
    );

    let xml = std::fs::read_to_string(&report.0).expect("the JUnit report");
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 0, "{xml}");
    assert_eq!(xml.matches("<skipped").count(), 1, "{xml}");
    assert!(
        xml.contains("<testcase classname=\"memory\" name=\"lock_fifo_waiters\""),
        "{xml}"
    );
    assert!(
        xml.contains("<skipped message=\"not run in the safe profile"),
        "{xml}"
    );
}

#[test]
fn bad_arguments_exit_2_and_unreachable_stores_exit_3() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
            .args(args)
            .output()
            .expect("running the runner")
    };
    let no_case = run(&["--backend", "memory://", "--case", "no_such_case_id"]);
    assert_eq!(no_case.status.code(), Some(2));
    assert!(no_case.stdout.is_empty(), "no matrix on bad arguments");
    let bad_profile = run(&["--profile", "reckless"]);
    assert_eq!(bad_profile.status.code(), Some(2));
    let bad_scheme = run(&["--backend", "bogus://x", "--case", "lock_try_lock"]);
    assert_eq!(bad_scheme.status.code(), Some(2));
    // Without the feature, postgres:// is a URL this build cannot use: a bad argument.
    if !cfg!(feature = "postgres") {
        return;
    }
    // A port nothing listens on (1 is reserved and closed on CI machines and here).
    let unreachable = run(&[
        "--backend",
        "postgres://conformance@127.0.0.1:1/none",
        "--case",
        "lock_try_lock",
    ]);
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(3), "{stderr}");
    assert!(unreachable.stdout.is_empty(), "no matrix when unreachable");
}
