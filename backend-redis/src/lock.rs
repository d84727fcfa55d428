//! The mutex: a waiter line of writers.

use distsync_core::raw::{Make, OnSession};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{LockGuard, Locker, Name, Result};

use crate::guarded::lock_guard;
use crate::keys::Kind;
use crate::store::Shared;
use crate::waiter_line::{Mode, WaiterLine};

/// A Redis mutex: FIFO waiters, fencing tokens from a counter incremented in the
/// granting script, held through a session (see [`crate::waiter_line`] for the layout).
pub(crate) struct RedisLock {
    queue: WaiterLine,
}

#[async_trait]
impl Locker for RedisLock {
    fn name(&self) -> &Name {
        self.queue.name()
    }

    /// Cancel-safety: cancel-safe; a dropped call withdraws from the line in the
    /// background (or leaves it to the lease) and never leaves the lock held.
    async fn lock(&self) -> Result<LockGuard> {
        let granted = self.queue.acquire(Mode::Write, None).await?;
        Ok(lock_guard(&self.queue, &granted))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let granted = self.queue.try_acquire(Mode::Write, None).await?;
        Ok(granted.map(|granted| lock_guard(&self.queue, &granted)))
    }

    /// Counts the holder and the queued waiters whose entries are live in the store.
    ///
    /// Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        crate::waiter_line::contenders(self.queue.shared(), self.queue.prefix()).await
    }
}

impl Make<Arc<Shared>, OnSession<()>> for RedisLock {
    fn make(shared: &Arc<Shared>, on: OnSession<()>) -> Result<Self> {
        Ok(Self {
            queue: WaiterLine::new(shared, &on.session, on.name, Kind::Lock),
        })
    }
}
