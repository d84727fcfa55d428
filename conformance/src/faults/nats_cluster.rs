//! The three-server NATS JetStream cluster of `scripts/servers.sh` (its URL in
//! [`NATS_CLUSTER_VAR`], buckets of three replicas): which member leads the bucket's
//! stream (the `cluster.leader` of the JetStream API's stream info, asked with a plain
//! NATS client), and stopping, killing (SIGKILL) and starting a member
//! (`scripts/servers.sh nats-stop-member N` / `nats-kill-member N` /
//! `nats-start-member N`). Members are numbered in URL order, and `servers.sh` names
//! member N `nats-N`, the name the stream info reports its leader by.
//!
//! The stream's leader, not the meta leader: it is the member every write of the
//! bucket goes through, so its loss is the one a client sees.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Result};

use super::cluster::{run_servers, servers_script_ready};
use super::nats::NatsTarget;
use super::{hook_error, Cluster, Connect};

/// The environment variable naming the three-server NATS cluster.
pub const NATS_CLUSTER_VAR: &str = "DISTSYNC_NATS_CLUSTER_URL";

/// The matrix column of a NATS URL naming more than one server.
pub const NATS_CLUSTER_COLUMN: &str = "nats-cluster";

/// Whether `url` is a `nats://` URL naming more than one server: a cluster, whose
/// matrix column is [`NATS_CLUSTER_COLUMN`].
pub fn names_cluster(url: &str) -> bool {
    NatsTarget::of_url(url).is_ok_and(|target| target.server_count() > 1)
}

/// The cluster at a URL.
pub struct NatsCluster {
    url: String,
    target: NatsTarget,
    members: usize,
    script: PathBuf,
    connect: Connect,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("url", &distsync_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl NatsCluster {
    /// Whether the tools are there (the `nats-client` feature's client, `bash`,
    /// `scripts/servers.sh`), or why not.
    pub fn available() -> std::result::Result<(), String> {
        super::nats::available()?;
        servers_script_ready().map(drop)
    }

    /// The cluster at `url` (`nats://host:port,host:port,host:port[?bucket=…]`),
    /// reached with `connect`.
    ///
    /// # Errors
    /// For a URL that is not a NATS one, or missing tools.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        Self::available().map_err(|reason| hook_error("the NATS cluster", reason))?;
        let script =
            servers_script_ready().map_err(|reason| hook_error("the NATS cluster", reason))?;
        let target = NatsTarget::of_url(url)?;
        Ok(Self {
            url: url.to_owned(),
            members: target.server_count(),
            target,
            script,
            connect,
        })
    }
}

/// The member (1-based) a stream leader's server name `nats-N` stands for, among
/// `members`.
fn member_of(leader: &str, members: usize) -> Option<usize> {
    let member: usize = leader.strip_prefix("nats-")?.parse().ok()?;
    (1..=members).contains(&member).then_some(member)
}

#[async_trait]
impl Cluster for NatsCluster {
    fn url(&self) -> &str {
        &self.url
    }

    fn members(&self) -> usize {
        self.members
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn leader(&self) -> Result<Option<usize>> {
        let leader = super::nats::stream_leader(&self.target).await?;
        Ok(leader.and_then(|name| member_of(&name, self.members)))
    }

    async fn stop_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "nats-stop-member", member).await
    }

    async fn start_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "nats-start-member", member).await
    }

    async fn kill_member(&self, member: usize) -> Result<()> {
        run_servers(&self.script, "nats-kill-member", member).await
    }

    fn restart_args(&self, member: usize) -> Option<Vec<String>> {
        Some(vec!["nats-start-member".to_owned(), member.to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_name_is_a_member_of_the_url() {
        assert_eq!(member_of("nats-2", 3), Some(2));
        assert_eq!(member_of("nats-4", 3), None);
        assert_eq!(member_of("nats-0", 3), None);
        assert_eq!(member_of("distsync-nats", 3), None);
    }
}
