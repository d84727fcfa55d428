//! The counting semaphore: the waiter line ([`crate::waiter_line`]) of permit entries,
//! whose first `N` live entries hold a permit.
//!
//! The name's row in `semaphores` records the permit count: the first joiner of an
//! unused name sets it; a joiner naming another count while the name has a live entry
//! gets [`Error::InvalidArgument`], and joins nothing. Once nobody holds or waits, any
//! count may be used.
//!
//! What the waiter line gives, it gives here: each permit entry counts while its
//! session's row lives (the lease gate); waiters are granted in arrival order, with no
//! connection held; a release wakes only the waiter it lets in; each grant takes the
//! next value of the name's fencing counter; a dropped acquisition withdraws its entry.

use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::{permit, waited, Make, OnSession};
use distsync_core::{Error, Name, Permit, Result, Semaphore, Session};

use crate::error::BACKEND;
use crate::guarded::lock_guard;
use crate::session::LeaseInner;
use crate::store::{LockKind, Shared};
use crate::waiter_line::{hold_key, take, Ask, Entry};

/// A PostgreSQL counting semaphore (see the module docs).
pub(crate) struct PgSemaphore {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
    pub(crate) permits: usize,
    /// `permits` as the `integer` the schema's functions take.
    pub(crate) permits_sql: i32,
}

impl PgSemaphore {
    async fn acquire_or_try(&self, wait: bool) -> Result<Option<Permit>> {
        let ask = Ask {
            kind: LockKind::Semaphore,
            permits: self.permits_sql,
            shared: false,
            campaign: None,
        };
        Ok(take(&self.lease, &self.name, &ask, wait)
            .await?
            .map(|(entry, token)| self.guard(entry, token)))
    }

    fn guard(&self, entry: Entry, token: i64) -> Permit {
        let key = format!(
            "{}/{}",
            hold_key(&self.lease, "semaphore", &self.name),
            entry.entry
        );
        permit(lock_guard(&self.lease, &self.session, key, entry, token))
    }
}

#[async_trait]
impl Semaphore for PgSemaphore {
    fn name(&self) -> &Name {
        &self.name
    }

    fn permits(&self) -> usize {
        self.permits
    }

    /// Joins the line and waits until this entry is among the first `permits` live ones.
    ///
    /// Cancel-safety: cancel-safe; a dropped call withdraws its entry in the background
    /// (releasing the permit if it was granted meanwhile), or leaves it to the session.
    async fn acquire(&self) -> Result<Permit> {
        waited(BACKEND, "acquire", self.acquire_or_try(true).await?)
    }

    /// Takes a permit if fewer than `permits` live entries are in line (a free permit,
    /// nobody waiting).
    ///
    /// Cancel-safety: cancel-safe; a dropped call withdraws what it may have joined.
    async fn try_acquire(&self) -> Result<Option<Permit>> {
        self.acquire_or_try(false).await
    }
}
/// The permits are an `int` in the tables: a count above `i32::MAX` is refused.
impl Make<Arc<Shared>, (OnSession<Arc<LeaseInner>>, NonZeroUsize)> for PgSemaphore {
    fn make(
        _: &Arc<Shared>,
        (on, permits): (OnSession<Arc<LeaseInner>>, NonZeroUsize),
    ) -> Result<Self> {
        let permits = permits.get();
        let permits_sql = i32::try_from(permits).map_err(|_| {
            Error::InvalidArgument(format!("semaphore permit count {permits} is too large"))
        })?;
        Ok(Self {
            lease: on.lease,
            session: on.session,
            name: on.name,
            permits,
            permits_sql,
        })
    }
}
