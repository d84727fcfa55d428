//! The distributed read-write lock.

use async_trait::async_trait;

use crate::error::Result;
use crate::guard::{LockGuard, ReadGuard};
use crate::name::Name;

/// A distributed read-write lock, held through a session.
///
/// Readers share; a writer excludes readers and writers. Fair as etcd's recipe: a
/// waiting writer blocks the readers that arrive after it. Write grants carry fencing
/// tokens. Created by [`crate::Backend::rwlock`].
#[async_trait]
pub trait RwLock: Send + Sync {
    /// The lock's name.
    fn name(&self) -> &Name;

    /// Waits for a shared (read) hold.
    ///
    /// Cancel-safety: cancel-safe; a dropped waiter leaves no entry that blocks others.
    async fn read(&self) -> Result<ReadGuard>;

    /// Takes a read hold if it can be had now.
    async fn try_read(&self) -> Result<Option<ReadGuard>>;

    /// Waits for the exclusive (write) hold.
    ///
    /// Cancel-safety: cancel-safe; a dropped waiter leaves no entry that blocks others.
    async fn write(&self) -> Result<LockGuard>;

    /// Takes the write hold if it can be had now.
    async fn try_write(&self) -> Result<Option<LockGuard>>;
}
