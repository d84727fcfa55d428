//! The read-write lock: a waiter line of readers and writers.

use distsync_core::raw::{Make, OnSession};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{LockGuard, Name, ReadGuard, Result, RwLock, Session};

use crate::guarded::lock_guard;
use crate::keys::Kind;
use crate::store::Shared;
use crate::waiter_line::{Mode, WaiterLine};

/// A Redis read-write lock: readers share, a writer excludes all, and a waiting
/// writer blocks the readers that arrive after it (etcd's recipe). Write grants carry
/// fencing tokens. See [`crate::waiter_line`].
pub(crate) struct RedisRwLock {
    queue: WaiterLine,
}

impl RedisRwLock {
    pub(crate) fn new(shared: &Arc<Shared>, session: &Session, name: Name) -> Self {
        Self {
            queue: WaiterLine::new(shared, session, name, Kind::RwLock),
        }
    }
}

#[async_trait]
impl RwLock for RedisRwLock {
    fn name(&self) -> &Name {
        self.queue.name()
    }

    /// Waits for a shared hold.
    ///
    /// Cancel-safety: cancel-safe; a dropped waiter withdraws in the background.
    async fn read(&self) -> Result<ReadGuard> {
        let granted = self.queue.acquire(Mode::Read, None).await?;
        let session = self.queue.session();
        Ok(distsync_core::raw::read_guard(
            granted.key(),
            session,
            granted.release_fn(session),
        ))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let session = self.queue.session();
        Ok(self.queue.try_acquire(Mode::Read).await?.map(|granted| {
            distsync_core::raw::read_guard(granted.key(), session, granted.release_fn(session))
        }))
    }

    /// Waits for the exclusive hold.
    ///
    /// Cancel-safety: cancel-safe; a dropped waiter withdraws in the background.
    async fn write(&self) -> Result<LockGuard> {
        let granted = self.queue.acquire(Mode::Write, None).await?;
        Ok(lock_guard(&self.queue, &granted))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let granted = self.queue.try_acquire(Mode::Write).await?;
        Ok(granted.map(|granted| lock_guard(&self.queue, &granted)))
    }
}

impl Make<Arc<Shared>, OnSession<()>> for RedisRwLock {
    fn make(context: &Arc<Shared>, on: OnSession<()>) -> Result<Self> {
        Ok(Self::new(context, &on.session, on.name))
    }
}
