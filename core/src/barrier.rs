//! Barriers.

use async_trait::async_trait;

use crate::error::Result;
use crate::name::Name;

/// A barrier that blocks waiters while it is held, as etcd's `recipes.Barrier`.
///
/// The hold is durable (not tied to a session). Created by [`crate::Backend::barrier`].
#[async_trait]
pub trait Barrier: Send + Sync {
    /// The barrier's name.
    fn name(&self) -> &Name;

    /// Raises the barrier; holding an already held barrier is not an error.
    async fn hold(&self) -> Result<()>;

    /// Lowers the barrier, letting every waiter through.
    async fn release(&self) -> Result<()>;

    /// Returns at once if the barrier is not held, or when it is released.
    ///
    /// Cancel-safety: cancel-safe; waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()>;
}

/// A double barrier for `count` participants, as etcd's `recipes.DoubleBarrier`:
/// `enter` returns when `count` participants have entered, `leave` when all have left.
///
/// Entries are held through the session and die with it. Created by
/// [`crate::Backend::double_barrier`].
#[async_trait]
pub trait DoubleBarrier: Send + Sync {
    /// The barrier's name.
    fn name(&self) -> &Name;

    /// The number of participants.
    fn count(&self) -> usize;

    /// Enters and waits until `count` participants have entered.
    ///
    /// # Errors
    /// [`crate::Error::TooManyParticipants`] for a participant over the count (its
    /// entry is removed).
    ///
    /// Cancel-safety: dropping the future leaves this participant's entry until its
    /// session ends or `leave` is called.
    async fn enter(&self) -> Result<()>;

    /// Leaves and waits until every participant has left.
    ///
    /// Cancel-safety: dropping the future may leave this participant's entry deleted
    /// or not; in either case it is bounded by the session.
    async fn leave(&self) -> Result<()>;
}
