//! The Redis Sentinel group of `scripts/servers.sh` (its URL in
//! `DISTSYNC_REDIS_SENTINEL_URL`): two nodes, a primary and its replica, watched by
//! three Sentinels. The group is a [`Cluster`] whose members are the two nodes, the
//! leader being the primary the Sentinels name (`scripts/servers.sh
//! sentinel-primary`); a member is killed with SIGKILL (`sentinel-kill-primary`),
//! started again as a replica of the new primary (`sentinel-start-node N`), and the
//! replica paused and resumed (`sentinel-pause-replica` / `sentinel-resume-replica`)
//! so that it lags behind the primary.
//!
//! The group is shared by every process on the machine: a case that fails it over
//! first takes its turn ([`SentinelFaults::cluster`] waits for it, see
//! `faults/group.rs`), so that two test processes never fail it over at once.
//!
//! [`SentinelFaults`] offers the group ([`Hook::Failover`]), second clients and
//! holders in child processes connected to the Sentinels' URL; the other hooks
//! (out-of-band session kills, private servers, proxies) need one server's address and
//! are not offered under Sentinel.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Error, Result};

use super::child;
pub use super::group::with_query;
use super::group::{printed_member, redis_group_available, servers, Turn};
use super::{hook_error, unsupported, Cluster, Connect, ExternalHolder, Faults, HolderSpec, Hook};
use crate::harness::Harness;

/// The environment variable naming the Sentinel group's URL.
pub const REDIS_SENTINEL_VAR: &str = "DISTSYNC_REDIS_SENTINEL_URL";

/// The Sentinel group at a URL.
pub struct SentinelGroup {
    url: String,
    connect: Connect,
    /// This process's turn at the group, when taken by [`SentinelFaults::cluster`].
    _turn: Option<Turn>,
}

impl std::fmt::Debug for SentinelGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelGroup")
            .field("url", &distsync_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl SentinelGroup {
    /// Whether the tools are there (`bash`, `redis-cli`, `scripts/servers.sh`), or why not.
    pub fn available() -> std::result::Result<(), String> {
        redis_group_available()
    }

    /// The group at `url` (`redis+sentinel://...`), reached with `connect`.
    ///
    /// # Errors
    /// For a URL that is not a Sentinel URL, or missing tools.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        if !url.starts_with("redis+sentinel://") {
            return Err(Error::invalid_url(url)(
                "the Sentinel group needs a redis+sentinel:// URL".to_owned(),
            ));
        }
        Self::available().map_err(|reason| hook_error("the Sentinel group", reason))?;
        Ok(Self {
            url: url.to_owned(),
            connect,
            _turn: None,
        })
    }
}

#[async_trait]
impl Cluster for SentinelGroup {
    fn url(&self) -> &str {
        &self.url
    }

    fn members(&self) -> usize {
        2
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn leader(&self) -> Result<Option<usize>> {
        let out = servers(&["sentinel-primary"]).await?;
        Ok(out.trim().parse().ok())
    }

    /// Kills the member (only the primary can be stopped here, by SIGKILL).
    async fn stop_member(&self, member: usize) -> Result<()> {
        self.kill_member(member).await
    }

    async fn start_member(&self, member: usize) -> Result<()> {
        servers(&["sentinel-start-node", &member.to_string()])
            .await
            .map(drop)
    }

    /// Kills `member`, which must be the primary the Sentinels name.
    async fn kill_member(&self, member: usize) -> Result<()> {
        let killed = servers(&["sentinel-kill-primary"]).await?;
        printed_member("sentinel-kill-primary", &killed, Some(member)).map(drop)
    }

    /// Pauses `member`, which must be the replica.
    async fn pause_member(&self, member: usize) -> Result<()> {
        self.replica_signal("sentinel-pause-replica", member).await
    }

    async fn resume_member(&self, member: usize) -> Result<()> {
        self.replica_signal("sentinel-resume-replica", member).await
    }

    async fn connect_with(&self, query: &str) -> Result<Arc<dyn Backend>> {
        (self.connect)(with_query(&self.url, query)).await
    }

    fn restart_args(&self, member: usize) -> Option<Vec<String>> {
        Some(vec!["sentinel-start-node".to_owned(), member.to_string()])
    }

    fn resume_args(&self, _member: usize) -> Option<Vec<String>> {
        Some(vec!["sentinel-resume-replica".to_owned()])
    }
}

impl SentinelGroup {
    async fn replica_signal(&self, command: &str, member: usize) -> Result<()> {
        if self.leader().await? == Some(member) {
            return Err(hook_error(
                command,
                format!("node {member} is the primary, not the replica"),
            ));
        }
        servers(&[command]).await.map(drop)
    }
}

/// The fault hooks of a Redis Sentinel group: the group itself ([`Hook::Failover`])
/// and second clients.
#[derive(Clone)]
pub struct SentinelFaults {
    url: String,
    connect: Connect,
}

impl std::fmt::Debug for SentinelFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelFaults")
            .field("url", &distsync_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl SentinelFaults {
    /// The hooks of the group at `url`, reached with `connect`.
    pub fn new(url: &str, connect: Connect) -> Self {
        Self {
            url: url.to_owned(),
            connect,
        }
    }
}

impl Harness {
    /// A harness over the Redis Sentinel group at `url` (`redis+sentinel://...`),
    /// connected with `connect`, with [`SentinelFaults`].
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect_sentinel(url: &str, connect: Connect) -> Result<Self> {
        let faults = SentinelFaults::new(url, Arc::clone(&connect));
        let backend = connect(url.to_owned()).await?;
        Ok(Harness::new(backend).with_faults(Arc::new(faults)))
    }
}

#[async_trait]
impl Faults for SentinelFaults {
    fn describe(&self) -> String {
        "redis sentinel group: failover, second clients".to_owned()
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            Hook::Failover => SentinelGroup::available(),
            Hook::SecondClient => Ok(()),
            Hook::ChildHolder | Hook::PausedHolder => child::launcher().map(drop),
            Hook::AnyExternalHolder => super::any_external_holder(self),
            other => Err(format!(
                "{other}: not offered under Sentinel (the hooks need one server's address)"
            )),
        }
    }

    async fn cluster(&self, backend: &dyn Backend) -> Result<Box<dyn Cluster>> {
        SentinelGroup::available().map_err(|_| unsupported(backend, Hook::Failover))?;
        let mut group = SentinelGroup::new(&self.url, Arc::clone(&self.connect))?;
        group._turn = Some(Turn::take("sentinel").await?);
        Ok(Box::new(group))
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    fn child_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    /// A holder in a child process (this process's registered launcher) connected to
    /// the Sentinels' URL.
    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        let launcher = child::launcher().map_err(|_| unsupported(backend, Hook::ChildHolder))?;
        Ok(Box::new(child::spawn(launcher, &self.url, spec).await?))
    }
}
