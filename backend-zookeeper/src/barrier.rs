//! The barrier, in the layout and protocol of Curator's `DistributedBarrier`, so that
//! a Rust or Java holder holds back Rust and Java waiters alike.
//!
//! # Layout and protocol
//!
//! The barrier `<name>` is held while the persistent node `<root>/barrier/<name>`
//! exists; which Curator calls match `hold`, `release` and `wait`, the short session
//! each call opens, and why a barrier with a held one under its name cannot be
//! released are in docs/ZOOKEEPER.md, "Barriers". A waiter checks the node with a
//! watch and returns once it is missing, waiting for the watch otherwise; it keeps its
//! short session for the wait and opens another should it end.
//!
//! # Cancel safety
//!
//! `hold` and `release` are single requests (dropped before the answer, they may or
//! may not have been applied; calling again is harmless); `wait` only reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::Make;
use distsync_core::{Barrier, Error, Name, Result};
use zookeeper_client as zk;

use crate::direct::{timed, Direct, RETRY_PAUSE};
use crate::error::{is_connection_loss, is_session_end, map};
use crate::keys::{self, Kind};
use crate::store::Shared;

/// The timeout of a barrier's own sessions: they hold nothing, and a waiter whose
/// session ends opens another.
const SESSION: Duration = Duration::from_secs(4);

/// A barrier named `name`: Curator's `DistributedBarrier` on its node.
pub(crate) struct ZkBarrier {
    shared: Arc<Shared>,
    name: Name,
    path: String,
}

#[async_trait]
impl Barrier for ZkBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn hold(&self) -> Result<()> {
        let client = self.shared.connect(SESSION).await?;
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        // mkdir: the node with its missing ancestors, and no error when it exists.
        timed(&self.shared, client.mkdir(&self.path, &options))
            .await?
            .map_err(map)
    }

    async fn release(&self) -> Result<()> {
        let client = self.shared.connect(SESSION).await?;
        match timed(&self.shared, client.delete(&self.path, None)).await? {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(zk::Error::NotEmpty) => Err(Error::backend(
                crate::BACKEND,
                format!(
                    "barrier {:?} has a held barrier under its name ({}/...): release that \
                     first",
                    self.name, self.path
                ),
            )),
            Err(error) => Err(map(error)),
        }
    }

    async fn wait(&self) -> Result<()> {
        let mut client = self.shared.connect(SESSION).await?;
        loop {
            match timed(&self.shared, client.check_and_watch_stat(&self.path)).await {
                Ok(Ok((None, _))) => return Ok(()),
                Ok(Ok((Some(_), watcher))) => {
                    // Fires on the delete, or when the session ends (looked at again).
                    let _ = watcher.changed().await;
                }
                Ok(Err(error)) if is_session_end(&error) => {
                    client = self.shared.connect(SESSION).await?;
                }
                Ok(Err(error)) if is_connection_loss(&error) => {
                    tracing::debug!(barrier = %self.name, "zookeeper connection lost; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    tracing::debug!(barrier = %self.name, "zookeeper request not answered; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(error)) => return Err(map(error)),
            }
        }
    }
}

impl Make<Arc<Direct>, Name> for ZkBarrier {
    fn make(direct: &Arc<Direct>, name: Name) -> Result<Self> {
        let shared = &direct.shared;
        Ok(Self {
            path: keys::path(shared.config.root(), Kind::Barrier, &name),
            shared: Arc::clone(shared),
            name,
        })
    }
}
