//! The double barrier, in the layout and protocol of Curator's
//! `DistributedDoubleBarrier`, so that Rust and Java participants enter and leave
//! together.
//!
//! # Layout
//!
//! The double barrier `<name>` is the persistent node `<root>/double_barrier/<name>`;
//! each participant that entered is its ephemeral child `<id>` (a random UUID, as
//! Curator's), of the participant's session; the persistent child `ready` says that
//! every participant has entered.
//!
//! # Protocol
//!
//! * **Enter**: check `ready` with a watch, create the participant's node, and return
//!   at once if `ready` was there. Otherwise list the children: once there are at least
//!   `count`, create `ready` (an existing one is fine) and return; else wait for the
//!   watch on `ready` and look again.
//! * **Leave**: list the participants (`ready` aside) in name order. The lowest waits
//!   for the highest to go, again and again, until it is alone, and then deletes its
//!   node; every other deletes its node and waits for the lowest to go. Then `ready`
//!   is deleted (a missing one is fine), so the barrier can be used again.
//!
//! Curator does not bound the participants. distsync does, as on the other stores: a
//! participant that finds, after creating its node, more participants than `count`
//! deletes its node again and fails with [`Error::TooManyParticipants`]. Two extra
//! participants arriving at once may both see the excess and both be refused while the
//! barrier still has room for one of them.
//!
//! # Cancel safety
//!
//! `enter` dropped before it returns may leave the participant's node, which the
//! session removes when it ends (or a later `leave`); `leave` dropped midway may leave
//! the others waiting for this participant's node until its session ends.

use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::{Make, OnSession};
use distsync_core::{DoubleBarrier, Error, Name, Result, Session};
use zookeeper_client as zk;

use crate::direct::Direct;
use crate::keys::{self, Kind};
use crate::lock::Line;
use crate::session::LeaseInner;

/// The child that says every participant has entered (Curator's `READY_NODE`).
const READY: &str = "ready";

/// A double barrier named `name` for `count` participants: Curator's
/// `DistributedDoubleBarrier` on its node.
pub(crate) struct ZkDoubleBarrier {
    /// The session, the lease and the node (`dir`), with their request helpers.
    line: Line,
    count: NonZeroUsize,
    /// This participant's node name.
    id: String,
}

impl ZkDoubleBarrier {
    pub(crate) fn new(
        session: Session,
        lease: Arc<LeaseInner>,
        name: Name,
        count: NonZeroUsize,
    ) -> Self {
        let dir = keys::path(lease.shared.config.root(), Kind::DoubleBarrier, &name);
        let prefix = keys::protected_prefix();
        // `_c_<uuid>-` without Curator's protection marks: the UUID alone, as Curator's ids.
        let id = prefix
            .trim_start_matches("_c_")
            .trim_end_matches('-')
            .to_owned();
        Self {
            line: Line::at(session, lease, name, dir, keys::LOCK_NAME),
            count,
            id,
        }
    }

    fn ours(&self) -> String {
        format!("{}/{}", self.line.dir, self.id)
    }

    fn ready(&self) -> String {
        format!("{}/{READY}", self.line.dir)
    }

    /// The participants (`ready` aside), in name order.
    async fn participants(&self) -> Result<Vec<String>> {
        let client = self.line.lease.client()?;
        let mut children = match self
            .line
            .retrying(|| client.list_children(&self.line.dir))
            .await?
        {
            Ok(children) => children,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(error) => return Err(self.line.lease.error(error)),
        };
        children.retain(|child| child != READY);
        children.sort();
        Ok(children)
    }

    /// Deletes the node at `path`; a missing one is fine.
    async fn delete(&self, path: &str) -> Result<()> {
        let client = self.line.lease.client()?;
        match self.line.retrying(|| client.delete(path, None)).await? {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(error) => Err(self.line.lease.error(error)),
        }
    }

    /// Watches the node at `path`: `None` when it is missing, else its watcher.
    async fn watch(&self, path: &str) -> Result<Option<zk::OneshotWatcher>> {
        let client = self.line.lease.client()?;
        match self
            .line
            .retrying(|| client.check_and_watch_stat(path))
            .await?
        {
            Ok((Some(_), watcher)) => Ok(Some(watcher)),
            Ok((None, _)) => Ok(None),
            Err(error) => Err(self.line.lease.error(error)),
        }
    }

    /// Watches `ready` for its creation: `None` when it exists already.
    async fn watch_ready(&self) -> Result<Option<zk::OneshotWatcher>> {
        let client = self.line.lease.client()?;
        let ready = self.ready();
        match self
            .line
            .retrying(|| client.check_and_watch_stat(&ready))
            .await?
        {
            Ok((Some(_), _)) => Ok(None),
            Ok((None, watcher)) => Ok(Some(watcher)),
            Err(error) => Err(self.line.lease.error(error)),
        }
    }

    /// Waits for `watcher` or the end of the session.
    async fn until(&self, watcher: zk::OneshotWatcher) -> Result<()> {
        tokio::select! {
            () = self.line.session.lost() => Err(Error::SessionLost),
            _ = watcher.changed() => Ok(()),
        }
    }

    /// Creates this participant's node (and the barrier's node if missing).
    async fn create_ours(&self) -> Result<()> {
        let client = self.line.lease.client()?;
        let ours = self.ours();
        let data = format!("{:x}", self.line.lease.id).into_bytes();
        let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        loop {
            match self
                .line
                .retrying(|| client.create(&ours, &data, &options))
                .await?
            {
                // Exists: entered already (or a retried create that was applied).
                Ok(_) | Err(zk::Error::NodeExists) => return Ok(()),
                Err(zk::Error::NoNode) => {
                    let dir = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    if let Err(error) = self
                        .line
                        .retrying(|| client.mkdir(&self.line.dir, &dir))
                        .await?
                    {
                        return Err(self.line.lease.error(error));
                    }
                }
                Err(error) => return Err(self.line.lease.error(error)),
            }
        }
    }
}

#[async_trait]
impl DoubleBarrier for ZkDoubleBarrier {
    fn name(&self) -> &Name {
        &self.line.name
    }

    fn count(&self) -> usize {
        self.count.get()
    }

    async fn enter(&self) -> Result<()> {
        self.line.check_session()?;
        let mut ready = self.watch_ready().await?;
        self.create_ours().await?;
        if self.participants().await?.len() > self.count.get() {
            self.delete(&self.ours()).await?;
            return Err(Error::TooManyParticipants {
                name: self.line.name.to_string(),
                count: self.count.get(),
            });
        }
        loop {
            // `ready` exists: every participant has entered.
            let Some(watcher) = ready else {
                return Ok(());
            };
            if self.participants().await?.len() >= self.count.get() {
                let client = self.line.lease.client()?;
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                let ready_path = self.ready();
                return match self
                    .line
                    .retrying(|| client.create(&ready_path, &[], &options))
                    .await?
                {
                    Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
                    Err(error) => Err(self.line.lease.error(error)),
                };
            }
            self.until(watcher).await?;
            ready = self.watch_ready().await?;
        }
    }

    async fn leave(&self) -> Result<()> {
        self.line.check_session()?;
        let mut ours_exists = true;
        loop {
            let participants = self.participants().await?;
            if participants.is_empty() {
                break;
            }
            let index = participants.iter().position(|child| *child == self.id);
            if index.is_none() && ours_exists {
                return Err(
                    if self.line.session.is_lost() || self.line.lease.is_over() {
                        Error::SessionLost
                    } else {
                        Error::backend(
                            crate::BACKEND,
                            format!(
                                "the participant node {} of {:?} is missing: not entered, or \
                             deleted by someone else",
                                self.ours(),
                                self.line.name
                            ),
                        )
                    },
                );
            }
            if participants.len() == 1 {
                if ours_exists {
                    self.delete(&self.ours()).await?;
                }
                break;
            }
            let watched = if index == Some(0) {
                // The lowest waits for everyone else, the highest first.
                let highest = &participants[participants.len() - 1];
                self.watch(&format!("{}/{highest}", self.line.dir)).await?
            } else {
                let watched = self
                    .watch(&format!("{}/{}", self.line.dir, participants[0]))
                    .await?;
                if ours_exists {
                    self.delete(&self.ours()).await?;
                    ours_exists = false;
                }
                watched
            };
            if let Some(watcher) = watched {
                self.until(watcher).await?;
            }
        }
        self.delete(&self.ready()).await
    }
}

impl Make<Arc<Direct>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for ZkDoubleBarrier {
    fn make(
        _: &Arc<Direct>,
        (on, count): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        Ok(Self::new(on.session, on.lease, on.name, count))
    }
}
