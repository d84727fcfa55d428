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

    /// [`Self::wait`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`], removing nothing (waiting leaves no entry) (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::wait`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::wait`].
    async fn wait_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        crate::timeout::timed(timeout, self.wait()).await
    }
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
    /// # Cancel safety
    ///
    /// This method is not fully cancel safe: dropping the future leaves this
    /// participant's entry in the store, counted as entered, until its session ends or
    /// [`DoubleBarrier::leave`] is called (the residue is bounded by the session).
    async fn enter(&self) -> Result<()>;

    /// [`Self::enter`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`] (see [`crate::timeout`]). As after a cancelled
    /// [`Self::enter`], the participant's entry stays (entering again resumes with it)
    /// until [`Self::leave`] or the end of its session, which withdraws it.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::enter`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::enter`].
    async fn enter_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        crate::timeout::timed(timeout, self.enter()).await
    }

    /// Leaves and waits until every participant has left.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes may leave this participant's entry
    /// deleted or not; in either case it is bounded by the session.
    async fn leave(&self) -> Result<()>;

    /// [`Self::leave`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`], removing nothing: the entry is gone or goes with the
    /// session (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::leave`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::leave`].
    async fn leave_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        crate::timeout::timed(timeout, self.leave()).await
    }
}
