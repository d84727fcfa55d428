//! The mutex: an exclusive entry in the name's line (see [`crate::waiter_line`]).

use distsync_core::raw::waited;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{LockGuard, Locker, Name, Result, Session};

use crate::guarded::lock_guard;
use crate::session::LeaseInner;
use crate::store::LockKind;
use crate::waiter_line::{acquire, hold_key, Entry};

pub(crate) struct PgLocker {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
}

impl PgLocker {
    fn guard(&self, entry: Entry, token: i64) -> LockGuard {
        let key = hold_key(&self.lease, "lock", &self.name);
        lock_guard(&self.lease, &self.session, key, entry, token)
    }
}

#[async_trait]
impl Locker for PgLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Joins the name's line and waits, holding no connection, until first (FIFO).
    ///
    /// Cancel-safety: cancel-safe; a dropped wait withdraws its entry in the background
    /// (releasing the lock if it was granted in the meantime).
    async fn lock(&self) -> Result<LockGuard> {
        let taken = acquire(&self.lease, LockKind::Lock, &self.name, false, true).await?;
        let (entry, token) = waited(crate::error::BACKEND, "lock", taken)?;
        Ok(self.guard(entry, token))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let granted = acquire(&self.lease, LockKind::Lock, &self.name, false, false).await?;
        Ok(granted.map(|(entry, token)| self.guard(entry, token)))
    }

    /// The live entries in the lock's line (the holder and its waiters) and the live
    /// waiters of the unfair lock of the same name, which contend for the same lock:
    /// one read, which registers nothing (a name never locked counts 0).
    ///
    /// Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        crate::unfair_lock::contenders(&self.lease.shared, &self.name).await
    }
}
