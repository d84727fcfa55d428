//! The counting semaphore: the waiter line ([`crate::waiter_line`]) of permit entries, whose
//! first `N` live entries hold a permit.
//!
//! Layout (under `p = {<ns><escaped name>}:sem`): the waiter line's keys (`p:q`, `p:g`,
//! `p:e:<id>`, `p:fence`, `p:seq`, the wake-up channels `p:w:<id>`), plus `p:n`, the
//! permit count. The first entry to join sets `p:n`; a later joiner naming another
//! count while any entry is live is refused ([`Error::InvalidArgument`]) and leaves
//! nothing behind; `p:n` is deleted when the line empties, so once nobody holds or
//! waits, any count may be used.
//!
//! Everything else is the waiter line's: permits held through the session, arrival
//! order, one wake-up per grant, fencing tokens, withdrawal of a dropped acquisition.
//!
//! [`Error::InvalidArgument`]: distsync_core::Error::InvalidArgument

use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{permit, Make, OnSession};
use distsync_core::{Name, Permit, Result, Semaphore};

use crate::guarded::lock_guard;
use crate::keys::Kind;
use crate::store::Shared;
use crate::waiter_line::{Mode, WaiterLine};

/// A Redis counting semaphore (see the module docs).
pub(crate) struct RedisSemaphore {
    queue: WaiterLine,
    permits: usize,
    /// The permit count as the scripts get it (decimal).
    count: Bytes,
}

#[async_trait]
impl Semaphore for RedisSemaphore {
    fn name(&self) -> &Name {
        self.queue.name()
    }

    fn permits(&self) -> usize {
        self.permits
    }

    /// Cancel-safety: cancel-safe; a dropped call withdraws its entry in the
    /// background (or leaves it to the lease) and never leaves a permit held.
    async fn acquire(&self) -> Result<Permit> {
        let granted = self.queue.acquire(Mode::Permit, Some(&self.count)).await?;
        Ok(permit(lock_guard(&self.queue, &granted)))
    }

    /// Cancel-safety: cancel-safe; a dropped call releases what it may have taken.
    async fn try_acquire(&self) -> Result<Option<Permit>> {
        Ok(self
            .queue
            .try_acquire(Mode::Permit, Some(&self.count))
            .await?
            .map(|granted| permit(lock_guard(&self.queue, &granted))))
    }
}

impl Make<Arc<Shared>, (OnSession<()>, NonZeroUsize)> for RedisSemaphore {
    fn make(shared: &Arc<Shared>, (on, permits): (OnSession<()>, NonZeroUsize)) -> Result<Self> {
        let permits = permits.get();
        Ok(Self {
            queue: WaiterLine::new(shared, &on.session, on.name, Kind::Semaphore),
            permits,
            count: Bytes::from(permits.to_string()),
        })
    }
}
