//! The distributed read-write lock.

use async_trait::async_trait;

use crate::error::Result;
use crate::guard::{LockGuard, ReadGuard};
use crate::name::Name;

/// A distributed read-write lock, held through a session.
///
/// Readers share; a writer excludes readers and writers. Fair as etcd's recipe: a
/// waiting writer blocks the readers that arrive after it. Write grants carry fencing
/// tokens. Created by [`crate::raw::Primitives::rwlock`].
#[async_trait]
pub trait RwLock: Send + Sync {
    /// The lock's name.
    fn name(&self) -> &Name;

    /// Waits for a shared (read) hold.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves no
    /// entry that blocks others (it is removed, or bounded by the lease) and never
    /// leaves a read hold behind.
    async fn read(&self) -> Result<ReadGuard>;

    /// Takes a read hold if it can be had now (no writer holds or waits), without
    /// waiting; `Ok(None)` otherwise.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. It does not wait for a holder, only for the store's
    /// answer; dropping the future before it completes removes the entry it may have
    /// made (or leaves it to the lease) and never leaves a hold behind.
    async fn try_read(&self) -> Result<Option<ReadGuard>>;

    /// Waits for the exclusive (write) hold.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves no
    /// entry that blocks others (it is removed, or bounded by the lease) and never
    /// leaves the write hold behind.
    async fn write(&self) -> Result<LockGuard>;

    /// Takes the write hold if it can be had now, without waiting; `Ok(None)`
    /// otherwise.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`RwLock::try_read`].
    async fn try_write(&self) -> Result<Option<LockGuard>>;
}
