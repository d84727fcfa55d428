//! ZooKeeper: create an ephemeral sequential node under the lock's node, list the
//! children to see that it is the lowest, delete it. Those are the three requests of
//! an uncontended Curator `InterProcessMutex` cycle (and of distsync's), without the
//! protected-mode prefix, retries, watches or the guard.

use std::time::Duration;

use async_trait::async_trait;
use zookeeper_client as zk;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The session timeout asked for: longer than a measurement's pauses, and within
/// ZooKeeper's default bounds (2 to 20 ticks of 2 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// What precedes the sequence in a contender's node name, as Curator's.
const LOCK_NAME: &str = "lock-";

/// The label of the raw row.
pub const LABEL: &str = "raw: create ephemeral sequential + list children + delete";

/// The raw ZooKeeper cycle on its own client (one session).
struct RawZookeeper {
    client: zk::Client,
    /// The lock's node, the parent of the contender nodes.
    dir: String,
    /// `dir/lock-`, to which the server appends the sequence.
    prefix: String,
}

/// Connects to the servers of the distsync URL `url` and makes the lock's node for
/// `name` (under the URL's root).
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let (client, root) = client(url).await?;
        let dir = format!("{root}/{name}");
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        client.mkdir(&dir, &options).await?;
        let prefix = format!("{dir}/{LOCK_NAME}");
        Ok(RawZookeeper {
            client,
            dir,
            prefix,
        })
    };
    started(LABEL, Role::Raw, made.await)
}

/// A `zookeeper-client` client for the servers of the distsync URL `url`, and the
/// URL's root node.
///
/// # Errors
/// A URL distsync would reject, one with a digest login (the bench measures without
/// one), or the connection error.
pub async fn client(url: &str) -> Result<(zk::Client, String)> {
    let config: distsync::store::zookeeper::ZkConfig = url.parse()?;
    if config.user().is_some() {
        return Err("the bench connects without a digest login: use a URL without one".into());
    }
    let connector = zk::Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .with_connection_timeout(config.connect_timeout());
    let client = connector.connect(&config.hosts().join(",")).await?;
    Ok((client, config.root().to_owned()))
}

#[async_trait]
impl Cycler for RawZookeeper {
    async fn cycle(&mut self) -> Result<()> {
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, sequence) = self.client.create(&self.prefix, &[], &options).await?;
        let ours = format!("{LOCK_NAME}{sequence}");
        let children = self.client.list_children(&self.dir).await?;
        let lowest = children
            .iter()
            .filter_map(|child| child.strip_prefix(LOCK_NAME))
            .min();
        if lowest != ours.strip_prefix(LOCK_NAME) {
            return Err(format!("{}/{ours} is not the lowest contender", self.dir).into());
        }
        self.client
            .delete(&format!("{}/{ours}", self.dir), None)
            .await?;
        Ok(())
    }

    async fn close(self: Box<Self>) -> Result<()> {
        // The lock's node is empty after the last cycle; the session closes with the
        // client.
        match self.client.delete(&self.dir, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
