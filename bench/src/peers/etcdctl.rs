//! Go's `etcdctl lock` (Debian's etcd-client package), which runs etcd's Go
//! `concurrency.Mutex`: one process per lock, so every figure here includes starting
//! a Go program, connecting, granting a lease and exiting. Reported as it is, with
//! the cost of spawning `etcdctl version` (no network) beside it for scale.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::process::Command;

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The program.
const ETCDCTL: &str = "etcdctl";

/// Label of the one-process-per-cycle row.
pub const EXEC_LABEL: &str = "etcdctl lock NAME -- true (a process per cycle)";
/// Label of the process-spawn baseline row.
pub const SPAWN_LABEL: &str = "etcdctl version (process spawn only, no lock)";

/// The `etcdctl` rows, or why they cannot run.
pub async fn contenders(
    url: &str,
    name: &str,
) -> Vec<std::result::Result<Box<dyn Cycler>, Unavailable>> {
    let labels = [EXEC_LABEL, SPAWN_LABEL];
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
            endpoints,
            name: format!("{name}/etcdctl-exec"),
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
