//! The three-server ZooKeeper ensemble of `scripts/servers.sh` (its URL in
//! [`ZOOKEEPER_ENSEMBLE_VAR`]): which member leads (the `Mode:` line of the `srvr`
//! four-letter word, which the members' `4lw.commands.whitelist` allows), and
//! stopping, killing (SIGKILL) and starting a member (`scripts/servers.sh
//! zk-stop-member N` / `zk-kill-member N` / `zk-start-member N`). Members are numbered
//! in URL order, which is the order of their `myid` in the URL `servers.sh env` prints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Error, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::cluster::{run_servers, servers_script_ready};
use super::{hook_error, Cluster, Connect};

/// The environment variable naming the three-server ZooKeeper ensemble.
pub const ZOOKEEPER_ENSEMBLE_VAR: &str = "DISTSYNC_ZOOKEEPER_ENSEMBLE_URL";

/// How long asking one member for its mode may take: a member that is down refuses
/// at once, one that hangs is taken for not answering.
const ASK_LIMIT: Duration = Duration::from_secs(2);

/// The ensemble at a URL.
pub struct ZkEnsemble {
    url: String,
    endpoints: Vec<String>,
    script: PathBuf,
    connect: Connect,
}

impl std::fmt::Debug for ZkEnsemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkEnsemble")
            .field("url", &distsync_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl ZkEnsemble {
    /// Whether the tools are there (`bash`, `scripts/servers.sh`), or why not.
    pub fn available() -> std::result::Result<(), String> {
        servers_script_ready().map(drop)
    }

    /// The ensemble at `url` (`zk://host:port,host:port,host:port[/root]`), reached
    /// with `connect`.
    ///
    /// # Errors
    /// For a URL that is not ZooKeeper's, or missing tools.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        let script = servers_script_ready()
            .map_err(|reason| hook_error("the ZooKeeper ensemble", reason))?;
        Ok(Self {
            url: url.to_owned(),
            endpoints: zk_endpoints(url)?,
            script,
            connect,
        })
    }
}

/// The `host:port` endpoints of a `zk://[user:password@]host:port[,host:port...][/root]`
/// URL, in its order.
fn zk_endpoints(url: &str) -> Result<Vec<String>> {
    let invalid_url = Error::invalid_url(url);
    let invalid = |reason: &str| invalid_url(reason.to_owned());
    let rest = url
        .strip_prefix("zk://")
        .ok_or_else(|| invalid("not a zk:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|endpoint| !endpoint.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(invalid("no server"));
    }
    if let Some(bad) = endpoints.iter().find(|endpoint| {
        endpoint
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    }) {
        return Err(invalid(&format!("server {bad:?} has no port")));
    }
    Ok(endpoints)
}

/// The mode (`leader`, `follower`, `standalone`) in a `srvr` answer; `None` for a
/// member that does not serve (no quorum: "This ZooKeeper instance is not currently
/// serving requests").
fn parse_mode(srvr: &str) -> Option<&str> {
    srvr.lines()
        .find_map(|line| line.strip_prefix("Mode:"))
        .map(str::trim)
}

/// The `srvr` answer of the member at `endpoint`, or `None` if it does not answer
/// within [`ASK_LIMIT`].
async fn srvr(endpoint: &str) -> Option<String> {
    tokio::time::timeout(ASK_LIMIT, async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut answer = String::new();
        // The server closes the connection after its answer.
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    })
    .await
    .ok()
    .flatten()
}

#[async_trait]
impl Cluster for ZkEnsemble {
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
        let answers =
            futures::future::join_all(self.endpoints.iter().map(|endpoint| srvr(endpoint))).await;
        if answers.iter().all(Option::is_none) {
            return Err(hook_error(
                "asking the ZooKeeper ensemble for its leader",
                format!(
                    "no member of {} answers `srvr`",
                    distsync_core::redact_url(&self.url)
                ),
            ));
        }
        Ok(answers
            .iter()
            .position(|answer| answer.as_deref().and_then(parse_mode) == Some("leader"))
            .map(|index| index + 1))
    }

    async fn stop_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "zk-stop-member", member).await
    }

    async fn start_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "zk-start-member", member).await
    }

    async fn kill_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "zk-kill-member", member).await
    }

    fn restart_args(&self, member: usize) -> Option<Vec<String>> {
        Some(vec!["zk-start-member".to_owned(), member.to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_url_in_order() {
        assert_eq!(
            zk_endpoints("zk://127.0.0.1:3,127.0.0.1:1,127.0.0.1:2/apps?timeout=2s").unwrap(),
            ["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(zk_endpoints("zk://u:p@h:1,h:2").unwrap(), ["h:1", "h:2"]);
        assert!(zk_endpoints("zk:///root").is_err());
        assert!(zk_endpoints("zk://h").is_err());
        assert!(zk_endpoints("etcd://h:1").is_err());
        // The password is not in the error.
        let error = zk_endpoints("zk://u:secret@h").unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn the_mode_comes_from_srvr() {
        let leader = "Zookeeper version: 3.8.0-debian, built on 2022-08-22\n\
                      Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\n\
                      Outstanding: 0\nZxid: 0x100000000\nMode: leader\nNode count: 5\n\
                      Proposal sizes last/min/max: -1/-1/-1\n";
        assert_eq!(parse_mode(leader), Some("leader"));
        assert_eq!(parse_mode("Mode: follower\n"), Some("follower"));
        assert_eq!(
            parse_mode("This ZooKeeper instance is not currently serving requests\n"),
            None
        );
    }
}
