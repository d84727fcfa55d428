//! The counting semaphore: `permits` holders at once, each holding one permit through
//! its session.

use async_trait::async_trait;

use crate::error::Result;
use crate::guard::LockGuard;
use crate::name::Name;

/// One of a [`Semaphore`]'s permits, held through a session: the name the semaphore's
/// methods return it under. A permit is a [`LockGuard`] (a permit is one of `permits`
/// exclusive slots, guarded, fenced and released as a lock's hold is), so it has the
/// same `token()`, `lost()`, `while_held()` and `unlock()`, and code written for guards
/// takes it as is.
pub type Permit = LockGuard;

/// A counting semaphore: at most [`Semaphore::permits`] holders at once, each holding
/// one permit through its session (a permit is freed when the session ends, as a lock
/// is). Waiters are granted in arrival order, and only the waiter next in line is
/// woken. Every grant carries a fencing token greater than every earlier grant's.
///
/// The permit count is part of the semaphore's state: while a semaphore has holders or
/// waiters, a client naming another count gets [`crate::Error::InvalidArgument`] (no
/// silent disagreement). A [`Permit`] is a [`LockGuard`]: `token()`, `lost()`,
/// `while_held()`, `unlock()`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
/// let coordinator = distsync_core::Coordinator::new(distsync_kv::memory::MemoryBackend::new());
/// let session = coordinator.session().await?;
/// let pool = coordinator.semaphore(&session, "db/connections", 3)?;
/// let permit = pool.acquire().await?;
/// // ... use one of the three slots, passing permit.token() along ...
/// permit.unlock().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Semaphore: Send + Sync {
    /// The semaphore's name.
    fn name(&self) -> &Name;

    /// The number of permits.
    fn permits(&self) -> usize;

    /// Waits until this session holds a permit.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the semaphore is in use with another
    /// permit count; [`crate::Error::SessionLost`] if the session ends while waiting;
    /// the store's error.
    ///
    /// # Cancel safety
    /// This method is cancel safe: dropping the future removes this waiter's entry
    /// and never leaves a permit held.
    async fn acquire(&self) -> Result<Permit>;

    /// [`Self::acquire`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`], removing this waiter's entry (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::acquire`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::acquire`].
    async fn acquire_timeout(&self, timeout: std::time::Duration) -> Result<Permit> {
        crate::timeout::timed(timeout, self.acquire()).await
    }

    /// Takes a permit if one is free now (and nobody waits before us); `None`
    /// otherwise.
    ///
    /// # Errors
    /// As [`Self::acquire`].
    ///
    /// # Cancel safety
    /// Cancel safe: it does not wait for a holder; a dropped call removes its entry.
    async fn try_acquire(&self) -> Result<Option<Permit>>;
}
