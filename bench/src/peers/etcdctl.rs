//! Go's `etcdctl lock` (Debian's etcd-client package), which runs etcd's Go
//! `concurrency.Mutex`: one process per lock, so every figure here includes starting
//! a Go program, connecting, granting a lease and exiting.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::process::Command;

use crate::contender::{Contender, Cycler, Role, Started};
use crate::Result;

/// The program.
const ETCDCTL: &str = "etcdctl";

/// The label of this row.
pub const LABEL: &str = "etcdctl lock NAME -- true (a process per cycle)";

/// `etcdctl lock NAME -- true` for the endpoints of the distsync URL `url`, or why it
/// cannot run.
pub async fn start(url: &str, name: &str) -> Started {
    let unavailable = |error: String| Err((LABEL.to_owned(), Role::Peer, error.into()));
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
    let name = name.to_owned();
    let exec = Contender::new(LABEL, Role::Peer, Exec { endpoints, name });
    Ok(Contender {
        spawns: true,
        ..exec
    })
}

/// `etcdctl lock NAME -- true`: lock, run `true`, unlock, exit.
struct Exec {
    endpoints: String,
    name: String,
}

#[async_trait]
impl Cycler for Exec {
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
