//! The scale case in a process of its own, so that the client memory it reports is
//! its own.
//!
//! Run inside the bench's process, the case would read a resident memory swollen by
//! the cases and backends measured before it (the allocator keeps freed memory for
//! reuse, so 10,000 holds on a second backend grow `VmRSS` by nothing). So the bench
//! runs it as a child: the same binary with the hidden `--scale-child RUN_ID` and the
//! case's counts, the backend's URL in its usual environment variable (never on the
//! command line, where a password would show); the child measures with
//! [`super::run`] and prints the [`ScaleResult`] as JSON, which the parent reads
//! back. Where the running program is not `distsync-bench` (a test harness), the case
//! runs in-process.

use std::path::PathBuf;
use std::process::Stdio;

use super::ScaleResult;
use crate::args::{Args, Plan};
use crate::target::Target;

/// Runs the case on `target` in a child process (in-process where the program is not
/// the bench binary).
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> ScaleResult {
    match own_binary() {
        Some(binary) => in_child(binary, target, run_id, plan).await,
        None => super::run(target, run_id, plan).await,
    }
}

/// The child's side: measures the backend `args` select, as `args` ask, and returns
/// the result as JSON for standard output.
pub async fn child(args: &Args) -> String {
    let plan = Plan::from_args(args);
    let run_id = args.scale_child.clone().unwrap_or_default();
    let failed = |reason: String| failed(&plan, reason);
    let result = match args.selected().into_iter().next() {
        Some((kind, Ok(url))) => match Target::connect(kind, url).await {
            Ok(target) => super::run(&target, &run_id, &plan).await,
            Err(error) => failed(format!("could not connect: {error}")),
        },
        Some((_, Err(reason))) => failed(reason),
        None => failed("no backend given".into()),
    };
    serde_json::to_string(&result).unwrap_or_else(|error| {
        serde_json::to_string(&failed(format!("encoding the result: {error}"))).unwrap_or_default()
    })
}

/// The result of a run that did not measure, for `reason`.
fn failed(plan: &Plan, reason: String) -> ScaleResult {
    let holds = plan.scale_sizes.last().copied().unwrap_or(0);
    ScaleResult {
        holds,
        waiting: plan.scale_waiting.min(holds),
        ttl: plan.scale_ttl,
        error: Some(reason),
        ..ScaleResult::default()
    }
}

/// This program, if it is the bench binary.
fn own_binary() -> Option<PathBuf> {
    let binary = std::env::current_exe().ok()?;
    (binary.file_stem()? == "distsync-bench").then_some(binary)
}

fn joined(counts: &[usize]) -> String {
    counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn in_child(binary: PathBuf, target: &Target, run_id: &str, plan: &Plan) -> ScaleResult {
    let failed = |reason: String| failed(plan, reason);
    let mut command = tokio::process::Command::new(binary);
    let flags = [
        ("--scale-child", run_id.to_owned()),
        ("--cases", "scale".to_owned()),
        ("--backends", target.kind.to_string()),
        ("--scale-sizes", joined(&plan.scale_sizes)),
        ("--scale-waiting", plan.scale_waiting.to_string()),
        ("--scale-waiters", joined(&plan.scale_handoff_waiters)),
        ("--scale-ttl-secs", plan.scale_ttl.as_secs().to_string()),
        ("--handoffs", plan.handoffs.to_string()),
        ("--case-secs", plan.case_time.as_secs().to_string()),
        ("--settle-ms", plan.settle.as_millis().to_string()),
    ];
    for (flag, value) in flags {
        command.arg(flag).arg(value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(variable) = target.kind.url_variable() {
        command.env(variable, &target.url);
    }
    // `spawn` then `wait_with_output`: tokio's `output()` would capture the child's
    // logs too, which belong on this process's standard error.
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return failed(format!("could not start the scale process: {error}")),
    };
    match child.wait_with_output().await {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| failed(format!("reading the scale process's result: {error}"))),
        Ok(output) => failed(format!("the scale process failed ({})", output.status)),
        Err(error) => failed(format!("waiting for the scale process: {error}")),
    }
}
