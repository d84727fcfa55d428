//! The read-write lock: shared and exclusive session-level advisory locks on one key.
//!
//! Fairness comes from PostgreSQL's lock queue: a shared request that conflicts with a
//! *waiting* exclusive request queues behind it, so a waiting writer blocks the readers
//! that arrive after it, as etcd's recipe does. `try_read` fails while a writer waits.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{LockGuard, Name, ReadGuard, Result, RwLock, Session};

use crate::hold::{self, Grant, Hold};
use crate::lock::{guard, hold_key, release_fn};
use crate::session::LeaseInner;
use crate::shared::LockKind;

pub(crate) struct PgRwLock {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
}

impl PgRwLock {
    async fn try_acquire(&self, exclusive: bool) -> Result<Option<(Arc<Hold>, i64)>> {
        hold::acquire(
            &self.lease,
            LockKind::RwLock,
            self.name.as_str(),
            Grant::Lock { exclusive },
            false,
        )
        .await
    }

    async fn acquire(&self, exclusive: bool) -> Result<(Arc<Hold>, i64)> {
        hold::acquire_waiting(
            &self.lease,
            LockKind::RwLock,
            self.name.as_str(),
            Grant::Lock { exclusive },
        )
        .await
    }

    fn read_guard(&self, hold: Arc<Hold>) -> ReadGuard {
        ReadGuard::new(
            hold_key(&self.lease, "rwlock", &self.name),
            &self.session,
            release_fn(&self.lease, hold),
        )
    }
}

#[async_trait]
impl RwLock for PgRwLock {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Cancel-safety: cancel-safe; see [`crate::hold`].
    async fn read(&self) -> Result<ReadGuard> {
        let (hold, _) = self.acquire(false).await?;
        Ok(self.read_guard(hold))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self
            .try_acquire(false)
            .await?
            .map(|(hold, _)| self.read_guard(hold)))
    }

    /// Cancel-safety: cancel-safe; see [`crate::hold`].
    async fn write(&self) -> Result<LockGuard> {
        let (hold, token) = self.acquire(true).await?;
        Ok(guard(
            &self.lease,
            &self.session,
            "rwlock",
            &self.name,
            hold,
            token,
        ))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        Ok(self.try_acquire(true).await?.map(|(hold, token)| {
            guard(
                &self.lease,
                &self.session,
                "rwlock",
                &self.name,
                hold,
                token,
            )
        }))
    }
}
