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
//! first takes its turn ([`SentinelFaults::cluster`] waits until it can create a
//! turn file in the temporary directory), so that two test processes never fail it
//! over at once.
//!
//! [`SentinelFaults`] offers the group ([`Hook::Failover`]) and second clients; the
//! other hooks (out-of-band session kills, child holders, private servers, proxies)
//! need one server's address and are not offered under Sentinel.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Error, Result};

use super::cluster::servers_script;
use super::tools::{require, run};
use super::{hook_error, unsupported, Cluster, Connect, Faults, Hook};
use crate::harness::Harness;

/// The environment variable naming the Sentinel group's URL.
pub const REDIS_SENTINEL_VAR: &str = "DISTSYNC_REDIS_SENTINEL_URL";

/// The URL `url` with its query parameters `query` (`key=value&...`) set, replacing
/// any of the same name.
pub fn with_query(url: &str, query: &str) -> String {
    let (base, old) = url.split_once('?').unwrap_or((url, ""));
    let new: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty()).collect();
    let key = |pair: &str| pair.split('=').next().unwrap_or_default().to_owned();
    let mut pairs: Vec<&str> = old
        .split('&')
        .filter(|pair| !pair.is_empty() && !new.iter().any(|n| key(n) == key(pair)))
        .collect();
    pairs.extend(new);
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

/// How long a case waits for its turn at the group.
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(55);

/// An exclusive turn at the group, across processes: a file created with
/// `create_new` in the temporary directory, holding the owner's pid (a file whose owner
/// is gone is taken over), removed when dropped.
struct Turn {
    path: PathBuf,
}

impl Turn {
    /// Waits (at most [`TURN_WAIT`]) for the turn.
    async fn take() -> Result<Self> {
        use std::io::Write as _;
        let path = std::env::temp_dir().join("distsync-sentinel-failover.turn");
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(std::process::id().to_string().as_bytes())
                        .map_err(|error| hook_error("writing the Sentinel group's turn", error))?;
                    return Ok(Self { path });
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                    // A turn being written has no pid yet: not stale.
                    if !alive && !owner.trim().is_empty() {
                        tracing::warn!(owner = owner.trim(), "taking over a stale Sentinel turn");
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                }
                Err(error) => return Err(hook_error("taking the Sentinel group's turn", error)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(hook_error(
                    "waiting for the Sentinel group",
                    format!("another process held it for {TURN_WAIT:?}"),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, "could not give back the Sentinel group's turn");
        }
    }
}

/// The Sentinel group at a URL.
pub struct SentinelGroup {
    url: String,
    script: PathBuf,
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
        require("bash", "bash")?;
        require("redis-cli", "redis-tools")?;
        let script = servers_script();
        if script.is_file() {
            Ok(())
        } else {
            Err(format!("{} is missing", script.display()))
        }
    }

    /// The group at `url` (`redis+sentinel://...`), reached with `connect`.
    ///
    /// # Errors
    /// For a URL that is not a Sentinel URL, or missing tools.
    pub fn new(url: &str, connect: Connect) -> Result<Self> {
        if !url.starts_with("redis+sentinel://") {
            return Err(Error::InvalidUrl {
                url: distsync_core::redact_url(url),
                reason: "the Sentinel group needs a redis+sentinel:// URL".to_owned(),
            });
        }
        Self::available().map_err(|reason| hook_error("the Sentinel group", reason))?;
        Ok(Self {
            url: url.to_owned(),
            script: servers_script(),
            connect,
            _turn: None,
        })
    }

    async fn servers(&self, args: &[&str]) -> Result<String> {
        let bash = require("bash", "bash").map_err(|reason| hook_error("servers.sh", reason))?;
        let mut all = vec![self.script.to_string_lossy().into_owned()];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        Ok(run(&bash, all, &[]).await?.stdout)
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
        let out = self.servers(&["sentinel-primary"]).await?;
        Ok(out.trim().parse().ok())
    }

    /// Kills the member (only the primary can be stopped here, by SIGKILL).
    async fn stop_member(&self, member: usize) -> Result<()> {
        self.kill_member(member).await
    }

    async fn start_member(&self, member: usize) -> Result<()> {
        self.servers(&["sentinel-start-node", &member.to_string()])
            .await
            .map(drop)
    }

    /// Kills `member`, which must be the primary the Sentinels name.
    async fn kill_member(&self, member: usize) -> Result<()> {
        let killed = self.servers(&["sentinel-kill-primary"]).await?;
        if killed.trim() != member.to_string() {
            return Err(hook_error(
                format!("killing Redis node {member}"),
                format!(
                    "node {} was the primary and was killed instead",
                    killed.trim()
                ),
            ));
        }
        Ok(())
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
}

impl SentinelGroup {
    async fn replica_signal(&self, command: &str, member: usize) -> Result<()> {
        if self.leader().await? == Some(member) {
            return Err(hook_error(
                command,
                format!("node {member} is the primary, not the replica"),
            ));
        }
        self.servers(&[command]).await.map(drop)
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
            other => Err(format!(
                "{other}: not offered under Sentinel (the hooks need one server's address)"
            )),
        }
    }

    async fn cluster(&self, backend: &dyn Backend) -> Result<Box<dyn Cluster>> {
        SentinelGroup::available().map_err(|_| unsupported(backend, Hook::Failover))?;
        let mut group = SentinelGroup::new(&self.url, Arc::clone(&self.connect))?;
        group._turn = Some(Turn::take().await?);
        Ok(Box::new(group))
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_set_or_replaced() {
        assert_eq!(
            with_query(
                "redis+sentinel://h/s?wait_replicas=1&namespace=a:",
                "wait_replicas=0"
            ),
            "redis+sentinel://h/s?namespace=a:&wait_replicas=0"
        );
        assert_eq!(
            with_query("redis+sentinel://h/s", "x=1"),
            "redis+sentinel://h/s?x=1"
        );
        assert_eq!(
            with_query("redis+sentinel://h/s?x=1", ""),
            "redis+sentinel://h/s?x=1"
        );
    }
}
