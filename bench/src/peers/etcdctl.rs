//! Go's `etcdctl lock` (Debian's etcd-client package), which runs etcd's Go
//! `concurrency.Mutex`: one process per lock, so every figure here includes starting
//! a Go program, connecting, granting a lease and exiting. Reported as it is, with
//! the cost of spawning `etcdctl version` (no network) beside it for scale.

use std::process::Stdio;
use std::time::Instant;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::contender::{Cycler, Role, Unavailable};
use crate::stats::Samples;
use crate::Result;

/// The program.
const ETCDCTL: &str = "etcdctl";

/// Label of the one-process-per-cycle row.
pub const EXEC_LABEL: &str = "etcdctl lock NAME -- true (a process per cycle)";
/// Label of the long-running holder row.
pub const HOLD_LABEL: &str = "etcdctl lock NAME, held, then SIGINT (a process per cycle)";
/// Label of the process-spawn baseline row.
pub const SPAWN_LABEL: &str = "etcdctl version (process spawn only, no lock)";

/// The three `etcdctl` rows, or why they cannot run.
pub async fn contenders(
    url: &str,
    name: &str,
) -> Vec<std::result::Result<Box<dyn Cycler>, Unavailable>> {
    let labels = [EXEC_LABEL, HOLD_LABEL, SPAWN_LABEL];
    let unavailable = |error: String| {
        labels
            .iter()
            .map(|label| Err((label.to_string(), Role::Peer, error.clone().into())))
            .collect()
    };
    let endpoints = match distsync::etcd::EtcdConfig::parse(url) {
        Ok(config) => config.endpoints().join(","),
        Err(error) => return unavailable(error.to_string()),
    };
    match Command::new(ETCDCTL).arg("version").output().await {
        Ok(output) if output.status.success() => {}
        Ok(output) => return unavailable(format!("`etcdctl version` failed: {}", output.status)),
        Err(error) => {
            return unavailable(format!(
                "`{ETCDCTL}` not runnable ({error}); it comes with Debian's etcd-client package"
            ))
        }
    }
    vec![
        Ok(Box::new(Exec {
            endpoints: endpoints.clone(),
            name: format!("{name}/etcdctl-exec"),
        })),
        Ok(Box::new(Hold {
            endpoints,
            name: format!("{name}/etcdctl-hold"),
            acquire: Samples::new(),
            release: Samples::new(),
        })),
        Ok(Box::new(Spawn)),
    ]
}

/// Process-spawning rows do a tenth of the cycles of the others.
fn process_cycles(cycles: usize) -> usize {
    (cycles / 10).max(1)
}

/// `etcdctl lock NAME -- true`: lock, run `true`, unlock, exit.
struct Exec {
    endpoints: String,
    name: String,
}

#[async_trait]
impl Cycler for Exec {
    fn label(&self) -> String {
        EXEC_LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn cycles(&self, cycles: usize) -> usize {
        process_cycles(cycles)
    }

    async fn cycle(&mut self) -> Result<()> {
        let status = Command::new(ETCDCTL)
            .arg(format!("--endpoints={}", self.endpoints))
            .args(["lock", &self.name, "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await?;
        if !status.success() {
            return Err(format!("etcdctl lock exited with {status}").into());
        }
        Ok(())
    }
}

/// `etcdctl lock NAME`: acquire (until it prints the key it holds), then SIGINT, on
/// which it unlocks and exits. Acquire and release are also recorded apart.
struct Hold {
    endpoints: String,
    name: String,
    acquire: Samples,
    release: Samples,
}

#[async_trait]
impl Cycler for Hold {
    fn label(&self) -> String {
        HOLD_LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn cycles(&self, cycles: usize) -> usize {
        process_cycles(cycles)
    }

    async fn cycle(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut child = Command::new(ETCDCTL)
            .arg(format!("--endpoints={}", self.endpoints))
            .args(["lock", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("etcdctl stdout not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        // It prints the key it holds (`NAME/<lease>`) once the lock is granted.
        loop {
            match lines.next_line().await? {
                Some(line) if line.starts_with(&self.name) => break,
                Some(_) => {}
                None => return Err("etcdctl lock exited without printing its key".into()),
            }
        }
        let held = Instant::now();
        self.acquire.push(held - start);
        interrupt(&child)?;
        let status = child.wait().await?;
        self.release.push(held.elapsed());
        if !status.success() {
            return Err(format!("etcdctl lock exited with {status} after SIGINT").into());
        }
        Ok(())
    }

    fn phases(&self) -> Vec<(String, Samples)> {
        vec![
            ("spawn → key printed (acquire)".into(), self.acquire.clone()),
            ("SIGINT → exit (release)".into(), self.release.clone()),
        ]
    }
}

/// Sends SIGINT to `child`, as Ctrl-C would.
fn interrupt(child: &tokio::process::Child) -> Result<()> {
    let pid = child.id().ok_or("etcdctl already exited")?;
    // A pid this process spawned and has not reaped yet (the child is waited for only
    // after this call), so it cannot name another process.
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).ok_or("pid 0")?;
    rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
    Ok(())
}

/// `etcdctl version`: the cost of starting the program, without any lock.
struct Spawn;

#[async_trait]
impl Cycler for Spawn {
    fn label(&self) -> String {
        SPAWN_LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Baseline
    }

    fn cycles(&self, cycles: usize) -> usize {
        process_cycles(cycles)
    }

    async fn cycle(&mut self) -> Result<()> {
        let status = Command::new(ETCDCTL)
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            return Err(format!("etcdctl version exited with {status}").into());
        }
        Ok(())
    }
}
