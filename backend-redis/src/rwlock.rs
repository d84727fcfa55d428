//! The read-write lock: a waiter line of readers and writers.

use distsync_core::raw::{Make, OnSession};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{LockGuard, Name, ReadGuard, Result, RwLock};

use crate::guarded::lock_guard;
use crate::keys::Kind;
use crate::store::Shared;
use crate::waiter_line::{Granted, Mode, WaiterLine};

/// A Redis read-write lock: readers share, a writer excludes all, and a waiting
/// writer blocks the readers that arrive after it (etcd's recipe). Write grants carry
/// fencing tokens. See [`crate::waiter_line`].
pub(crate) struct RedisRwLock {
    queue: WaiterLine,
}

#[async_trait]
impl RwLock for RedisRwLock {
    fn name(&self) -> &Name {
        self.queue.name()
    }

    /// Cancel-safety: cancel-safe; a dropped waiter withdraws in the background.
    async fn read(&self) -> Result<ReadGuard> {
        let granted = self.queue.acquire(Mode::Read, None).await?;
        Ok(read_guard(&self.queue, &granted))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let granted = self.queue.try_acquire(Mode::Read, None).await?;
        Ok(granted.map(|granted| read_guard(&self.queue, &granted)))
    }

    /// Cancel-safety: cancel-safe; a dropped waiter withdraws in the background.
    async fn write(&self) -> Result<LockGuard> {
        let granted = self.queue.acquire(Mode::Write, None).await?;
        Ok(lock_guard(&self.queue, &granted))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let granted = self.queue.try_acquire(Mode::Write, None).await?;
        Ok(granted.map(|granted| lock_guard(&self.queue, &granted)))
    }
}

/// The guard over `granted`, a shared entry of `line`: its key and release.
fn read_guard(line: &WaiterLine, granted: &Granted) -> ReadGuard {
    let session = line.session();
    distsync_core::raw::read_guard(granted.key(), session, granted.release_fn(session))
}

impl Make<Arc<Shared>, OnSession<()>> for RedisRwLock {
    fn make(shared: &Arc<Shared>, on: OnSession<()>) -> Result<Self> {
        Ok(Self {
            queue: WaiterLine::new(shared, &on.session, on.name, Kind::RwLock),
        })
    }
}
