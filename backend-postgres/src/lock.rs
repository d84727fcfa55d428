//! The mutex: an exclusive entry in the name's line (see [`crate::waiter_line`]).

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::waited;
use distsync_core::{LockGuard, Locker, Name, Result, Session};

use crate::guarded::lock_guard;
use crate::session::LeaseInner;
use crate::store::LockKind;
use crate::waiter_line::{hold_key, take, Ask, Entry};

/// What a lock asks of its line: an exclusive hold.
const ASK: Ask<'static> = Ask::hold(LockKind::Lock, false);

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
        let taken = take(&self.lease, &self.name, &ASK, true).await?;
        let (entry, token) = waited(crate::error::BACKEND, "lock", taken)?;
        Ok(self.guard(entry, token))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let granted = take(&self.lease, &self.name, &ASK, false).await?;
        Ok(granted.map(|(entry, token)| self.guard(entry, token)))
    }

    /// [`contenders`](crate::unfair_lock::contenders): the fair and the unfair lock of
    /// a name are one lock. Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        crate::unfair_lock::contenders(&self.lease.shared, &self.name).await
    }
}
