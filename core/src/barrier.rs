//! Barriers.

use async_trait::async_trait;

use crate::error::Result;
use crate::name::Name;

/// A barrier that blocks waiters while it is held, as etcd's `recipes.Barrier`.
///
/// The hold is durable (not tied to a session). Created by [`crate::raw::Primitives::barrier`].
#[async_trait]
pub trait Barrier: Send + Sync {
    /// The barrier's name.
    fn name(&self) -> &Name;

    /// Raises the barrier; holding an already held barrier is not an error.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it is one idempotent write, so a dropped future has
    /// either raised the barrier or not, and calling it again is harmless.
    async fn hold(&self) -> Result<()>;

    /// Lowers the barrier, letting every waiter through.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it is one idempotent write, so a dropped future has
    /// either lowered the barrier or not, and calling it again is harmless.
    async fn release(&self) -> Result<()>;

    /// Returns at once if the barrier is not held, or when it is released.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()>;
}

/// A double barrier for `count` participants, as etcd's `recipes.DoubleBarrier`:
/// `enter` returns when `count` participants have entered, `leave` when all have left.
///
/// Entries are held through the session and die with it. Created by
/// [`crate::raw::Primitives::double_barrier`].
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
    /// # Cancel safety
    ///
    /// This method is not fully cancel safe: dropping the future leaves this
    /// participant's entry in the store, counted as entered, until its session ends or
    /// [`DoubleBarrier::leave`] is called (the residue is bounded by the session).
    async fn enter(&self) -> Result<()>;

    /// Leaves and waits until every participant has left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes may leave this participant's entry
    /// deleted or not; in either case it is bounded by the session.
    async fn leave(&self) -> Result<()>;
}
