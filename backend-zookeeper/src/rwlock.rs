//! The read-write lock, in the layout and protocol of Curator's
//! `InterProcessReadWriteLock`, so that Rust and Java readers share the lock and
//! writers exclude everyone, in one line.
//!
//! # Layout
//!
//! The read-write lock's node and its readers' and writers' names and data are in
//! docs/ZOOKEEPER.md, "The read-write lock: `InterProcessReadWriteLock`", and so is
//! how its reentrancy differs from Curator's.
//!
//! # Protocol
//!
//! 1. **Enter**: create the contender node (the read-write lock's node is made on
//!    first use), protected as the lock's are (see `src/lock.rs`).
//! 2. **Wait**: list the children, keep readers and writers, order them by sequence.
//!    * A **writer** holds when it is first in line, and otherwise watches the
//!      contender just before it (Curator's write lock is an `InterProcessMutex` whose
//!      sort ignores the kind).
//!    * A **reader** holds when no writer is before it, and otherwise watches the first
//!      writer before it (Curator's `readLockPredicate`), so no writer starves.
//! 3. **Release**: delete the node; it also goes with its session.
//!
//! # Fencing
//!
//! A write guard's token is the creation zxid of its writer node: writers are granted
//! in sequence order, which is creation order, so tokens grow with every writer.
//!
//! # Cancel safety
//!
//! As the lock's: a contender dropped before its grant deletes its node in the
//! background by its protected prefix; should that fail, it goes with the session.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::{read_guard, GuardStoreSide as _};
use distsync_core::raw::{Make, OnSession};
use distsync_core::{LockGuard, Name, ReadGuard, Result, RwLock};

use crate::direct::Direct;
use crate::keys::{self, Kind, READ_NAME, WRITE_NAME};
use crate::lock::{Entry, Line};
use crate::session::LeaseInner;

/// A read-write lock named `name`: Curator's `InterProcessReadWriteLock` on its node.
pub(crate) struct ZkRwLock {
    readers: Line,
    writers: Line,
}

/// Where a contender stands: holding, or the node to watch before looking again.
enum Place {
    Holds,
    Behind(String),
}

impl ZkRwLock {
    /// Step 2's rule for `entry` (a writer when `writer`) against the line now.
    async fn place(&self, line: &Line, entry: &Entry, writer: bool) -> Result<Place> {
        let contenders = keys::rw_contenders(line.children().await?);
        let Some(ours) = contenders
            .iter()
            .position(|(_, child, _)| *child == entry.child)
        else {
            return Err(line.gone(entry));
        };
        let before = if writer {
            ours.checked_sub(1)
        } else {
            contenders[..ours].iter().position(|(_, _, writes)| *writes)
        };
        Ok(match before {
            None => Place::Holds,
            Some(index) => Place::Behind(format!("{}/{}", line.dir, contenders[index].1)),
        })
    }

    /// Step 2: waits until `entry` holds.
    async fn wait(&self, line: &Line, entry: &Entry, writer: bool) -> Result<()> {
        while let Place::Behind(before) = self.place(line, entry, writer).await? {
            line.wait_for(&before).await?;
        }
        Ok(())
    }

    /// A read guard for the granted reader `entry`.
    fn read_guard(&self, entry: Entry) -> ReadGuard {
        let (path, release, releasing) = self.readers.release(entry);
        read_guard(path.clone(), &self.readers.session, release)
            .with_loss_watch(self.readers.loss_watch(path, releasing))
    }

    /// Enters through `line` and answers at once: the entry if it holds, `None` (its
    /// node withdrawn) if not.
    async fn try_enter(&self, line: &Line, writer: bool) -> Result<Option<Entry>> {
        let attempt = async {
            let entry = line.enter(&line.session_data()).await?;
            match self.place(line, &entry, writer).await? {
                Place::Holds => Ok(Some(entry)),
                Place::Behind(_) => {
                    line.leave(entry).await?;
                    Ok(None)
                }
            }
        };
        let what = if writer { "try_write" } else { "try_read" };
        line.lease.shared.one_shot(what, attempt).await
    }
}

#[async_trait]
impl RwLock for ZkRwLock {
    fn name(&self) -> &Name {
        &self.readers.name
    }

    async fn read(&self) -> Result<ReadGuard> {
        let line = &self.readers;
        let entry = line.enter(&line.session_data()).await?;
        self.wait(line, &entry, false).await?;
        Ok(self.read_guard(entry))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self
            .try_enter(&self.readers, false)
            .await?
            .map(|entry| self.read_guard(entry)))
    }

    async fn write(&self) -> Result<LockGuard> {
        let line = &self.writers;
        let entry = line.enter(&line.session_data()).await?;
        self.wait(line, &entry, true).await?;
        Ok(line.guard(entry))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        Ok(self
            .try_enter(&self.writers, true)
            .await?
            .map(|entry| self.writers.guard(entry)))
    }
}

impl Make<Arc<Direct>, OnSession<Arc<LeaseInner>>> for ZkRwLock {
    fn make(_: &Arc<Direct>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let (session, lease, name) = (on.session, on.lease, on.name);
        let dir = keys::path(lease.shared.config.root(), Kind::RwLock, &name);
        Ok(Self {
            readers: Line::at(
                session.clone(),
                Arc::clone(&lease),
                name.clone(),
                dir.clone(),
                READ_NAME,
            ),
            writers: Line::at(session, lease, name, dir, WRITE_NAME),
        })
    }
}
