//! The read-write lock: shared and exclusive entries in one line (see [`crate::waiter_line`]).
//!
//! A reader holds when no live writer's entry is ahead of it; a writer when no live
//! entry is. So a waiting writer blocks the readers that arrive after it, as etcd's
//! recipe does, and `try_read` fails while a writer holds or waits.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::waited;
use distsync_core::{LockGuard, Name, ReadGuard, Result, RwLock, Session};

use crate::error::BACKEND;
use crate::guarded::lock_guard;
use crate::session::LeaseInner;
use crate::store::LockKind;
use crate::waiter_line::{hold_key, read_guard, take, Ask, Entry};

pub(crate) struct PgRwLock {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
}

impl PgRwLock {
    async fn take(&self, exclusive: bool, wait: bool) -> Result<Option<(Entry, i64)>> {
        let ask = Ask::hold(LockKind::RwLock, !exclusive);
        take(&self.lease, &self.name, &ask, wait).await
    }

    fn write_guard(&self, entry: Entry, token: i64) -> LockGuard {
        let key = hold_key(&self.lease, "rwlock", &self.name);
        lock_guard(&self.lease, &self.session, key, entry, token)
    }
}

#[async_trait]
impl RwLock for PgRwLock {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Cancel-safety: cancel-safe; see [`crate::waiter_line`].
    async fn read(&self) -> Result<ReadGuard> {
        let (entry, _) = waited(BACKEND, "read-write lock", self.take(false, true).await?)?;
        Ok(read_guard(&self.lease, &self.session, &self.name, entry))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self
            .take(false, false)
            .await?
            .map(|(entry, _)| read_guard(&self.lease, &self.session, &self.name, entry)))
    }

    /// Cancel-safety: cancel-safe; see [`crate::waiter_line`].
    async fn write(&self) -> Result<LockGuard> {
        let (entry, token) = waited(BACKEND, "read-write lock", self.take(true, true).await?)?;
        Ok(self.write_guard(entry, token))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        Ok(self
            .take(true, false)
            .await?
            .map(|(entry, token)| self.write_guard(entry, token)))
    }
}
