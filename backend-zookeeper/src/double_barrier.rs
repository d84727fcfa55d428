//! The double barrier, in the layout and protocol of Curator's
//! `DistributedDoubleBarrier`, so that Rust and Java participants enter and leave
//! together.
//!
//! # Layout
//!
//! The double barrier `<name>` is the persistent node `<root>/double_barrier/<name>`;
//! its participants' and `ready`'s nodes, which Curator shares, are in
//! docs/ZOOKEEPER.md, "Barriers".
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
//! deletes its node again and fails with [`Error::TooManyParticipants`] (what that
//! means for a race of extra participants is in docs/ZOOKEEPER.md, "Barriers").
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
use distsync_core::{DoubleBarrier, Error, Name, Result};
use zookeeper_client as zk;

use crate::direct::{persistent, Direct};
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
    fn ours(&self) -> String {
        format!("{}/{}", self.line.dir, self.id)
    }

    fn ready(&self) -> String {
        format!("{}/{READY}", self.line.dir)
    }

    /// The participants (`ready` aside), in name order.
    async fn participants(&self) -> Result<Vec<String>> {
        let mut children = self.line.children().await?;
        children.retain(|child| child != READY);
        children.sort();
        Ok(children)
    }

    /// Watches the node at `path`: `None` when it is missing, else its watcher.
    async fn watch(&self, path: &str) -> Result<Option<zk::OneshotWatcher>> {
        let (exists, watcher) = self.watch_stat(path).await?;
        Ok(exists.then_some(watcher))
    }

    /// Watches `ready` for its creation: `None` when it exists already.
    async fn watch_ready(&self) -> Result<Option<zk::OneshotWatcher>> {
        let (exists, watcher) = self.watch_stat(&self.ready()).await?;
        Ok((!exists).then_some(watcher))
    }

    /// Whether the node at `path` exists, and a watch on it.
    async fn watch_stat(&self, path: &str) -> Result<(bool, zk::OneshotWatcher)> {
        let client = self.line.lease.client()?;
        let watched = self.line.retrying(|| client.check_and_watch_stat(path));
        let (stat, watcher) = watched
            .await?
            .map_err(|error| self.line.lease.error(error))?;
        Ok((stat.is_some(), watcher))
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
        let data = self.line.session_data();
        let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        loop {
            match self
                .line
                .retrying(|| client.create(&ours, &data, &options))
                .await?
            {
                // Exists: entered already (or a retried create that was applied).
                Ok(_) | Err(zk::Error::NodeExists) => return Ok(()),
                Err(zk::Error::NoNode) => self.line.make_dir(&client).await?,
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
            self.line.delete(&self.ours()).await?;
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
                let (ready_path, options) = (self.ready(), persistent());
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
                    self.line.delete(&self.ours()).await?;
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
                    self.line.delete(&self.ours()).await?;
                    ours_exists = false;
                }
                watched
            };
            if let Some(watcher) = watched {
                self.until(watcher).await?;
            }
        }
        self.line.delete(&self.ready()).await
    }
}

impl Make<Arc<Direct>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for ZkDoubleBarrier {
    fn make(
        _: &Arc<Direct>,
        (on, count): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let dir = keys::path(on.lease.shared.config.root(), Kind::DoubleBarrier, &on.name);
        let prefix = keys::protected_prefix();
        // `_c_<uuid>-` without Curator's protection marks: the UUID alone, as Curator's ids.
        let id = prefix
            .trim_start_matches("_c_")
            .trim_end_matches('-')
            .to_owned();
        Ok(Self {
            line: Line::at(on.session, on.lease, on.name, dir, keys::LOCK_NAME),
            count,
            id,
        })
    }
}
