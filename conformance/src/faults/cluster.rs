//! The three-member etcd cluster of `scripts/servers.sh` (its URL in
//! `DISTSYNC_ETCD_CLUSTER_URL`): which member leads (`etcdctl endpoint status`), and
//! stopping, killing (SIGKILL) and starting a member (`scripts/servers.sh
//! stop-member N` / `kill-member N` / `start-member N`, members numbered in URL order).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Result};

use super::store::etcd_endpoints;
use super::tools::{self, require, run};
use super::{hook_error, Cluster, Connect};

/// The environment variable that may name another `servers.sh`.
pub const SERVERS_SCRIPT_VAR: &str = "DISTSYNC_SERVERS_SCRIPT";

/// `scripts/servers.sh` of this repository, or [`SERVERS_SCRIPT_VAR`].
pub fn servers_script() -> PathBuf {
    std::env::var_os(SERVERS_SCRIPT_VAR).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/servers.sh"
            ))
        },
        PathBuf::from,
    )
}

/// Whether `bash` and [`servers_script`] are there (what every member command
/// runs), or why not; the script's path when they are.
pub(crate) fn servers_script_ready() -> std::result::Result<PathBuf, String> {
    require("bash", "bash")?;
    let script = servers_script();
    if script.is_file() {
        Ok(script)
    } else {
        Err(format!("{} is missing", script.display()))
    }
}

/// The etcd cluster at a URL.
pub struct EtcdCluster {
    url: String,
    endpoints: Vec<String>,
    etcdctl: PathBuf,
    script: PathBuf,
    connect: Connect,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("url", &distsync_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl EtcdCluster {
    /// Whether the tools are there (`etcdctl`, `bash`, `scripts/servers.sh`), or why not.
    pub fn available() -> std::result::Result<(), String> {
        require("etcdctl", "etcd-client")?;
        servers_script_ready().map(drop)
    }

    /// The cluster at `url` (`etcd://host:port,host:port,host:port`), reached with
    /// `connect`.
    ///
    /// # Errors
    /// For a URL that is not etcd's, or missing tools.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        let script =
            servers_script_ready().map_err(|reason| hook_error("the etcd cluster", reason))?;
        Ok(Self {
            url: url.to_owned(),
            endpoints: etcd_endpoints(url)?,
            etcdctl: require("etcdctl", "etcd-client")
                .map_err(|reason| hook_error("the etcd cluster", reason))?,
            script,
            connect,
        })
    }

    /// `(member id, leader id)` as member `endpoint` sees them, or `None` if it does
    /// not answer.
    async fn status(&self, endpoint: &str) -> Option<(u64, u64)> {
        let out = run(
            &self.etcdctl,
            [
                format!("--endpoints={endpoint}"),
                "--dial-timeout=1s".to_owned(),
                "--command-timeout=2s".to_owned(),
                "endpoint".to_owned(),
                "status".to_owned(),
                "--write-out=json".to_owned(),
            ],
            &[("ETCDCTL_API", "3")],
        )
        .await
        .ok()?;
        parse_status(&out.stdout)
    }

    async fn servers(&self, command: &str, member: usize) -> Result<()> {
        run_servers(&self.script, command, member).await
    }
}

/// Runs `bash <script> <command> <member>` (a `scripts/servers.sh` member command).
pub(super) async fn run_servers(script: &Path, command: &str, member: usize) -> Result<()> {
    let bash = require("bash", "bash").map_err(|reason| hook_error("servers.sh", reason))?;
    let script = script.to_string_lossy().into_owned();
    tools::run(&bash, [script, command.to_owned(), member.to_string()], &[])
        .await
        .map(drop)
}

/// `(member id, leader id)` from `etcdctl endpoint status --write-out=json` for one
/// endpoint.
fn parse_status(json: &str) -> Option<(u64, u64)> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let status = value.as_array()?.first()?.get("Status")?;
    let member = status.get("header")?.get("member_id")?.as_u64()?;
    let leader = status.get("leader")?.as_u64()?;
    Some((member, leader))
}

#[async_trait]
impl Cluster for EtcdCluster {
    fn url(&self) -> &str {
        &self.url
    }

    fn members(&self) -> usize {
        self.endpoints.len()
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn leader(&self) -> Result<Option<usize>> {
        let mut members = Vec::new();
        let mut leader = None;
        for endpoint in &self.endpoints {
            match self.status(endpoint).await {
                Some((member, seen)) => {
                    members.push(Some(member));
                    if seen != 0 {
                        leader = Some(seen);
                    }
                }
                None => members.push(None),
            }
        }
        if members.iter().all(Option::is_none) {
            return Err(hook_error(
                "asking the etcd cluster for its leader",
                format!("no member of {} answers", self.url),
            ));
        }
        Ok(leader.and_then(|leader| {
            members
                .iter()
                .position(|member| *member == Some(leader))
                .map(|index| index + 1)
        }))
    }

    async fn stop_member(&self, member: usize) -> Result<()> {
        self.servers("stop-member", member).await
    }

    async fn start_member(&self, member: usize) -> Result<()> {
        self.servers("start-member", member).await
    }

    async fn kill_member(&self, member: usize) -> Result<()> {
        self.servers("kill-member", member).await
    }

    fn restart_args(&self, member: usize) -> Option<Vec<String>> {
        Some(vec!["start-member".to_owned(), member.to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_gives_member_and_leader() {
        // `etcdctl endpoint status -w json`'s output, one line there.
        let json = r#"[{"Endpoint":"127.0.0.1:23791","Status":{
            "header":{"cluster_id":8850262067644324224,"member_id":3844697888467255435,
                "revision":5971,"raft_term":9},
            "version":"3.4.23","leader":5080238166377795827,"raftIndex":14739}}]"#;
        assert_eq!(
            parse_status(json),
            Some((3844697888467255435, 5080238166377795827))
        );
        assert_eq!(parse_status("[]"), None);
        assert_eq!(parse_status("not json"), None);
    }

    #[test]
    fn the_servers_script_is_the_repository_s() {
        if std::env::var_os(SERVERS_SCRIPT_VAR).is_none() {
            assert!(servers_script().ends_with("scripts/servers.sh"));
            assert!(servers_script().is_file());
        }
    }
}
