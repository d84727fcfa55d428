//! The distributed mutex.

use async_trait::async_trait;

use crate::error::Result;
use crate::guard::LockGuard;
use crate::name::Name;

/// A distributed mutex, held through a session.
///
/// Created by [`crate::raw::Primitives::locker`]. Two tasks locking one name through one session
/// take turns in-process before reaching the store; tasks with different sessions
/// contend in the store, FIFO where the backend declares
/// [`fifo_waiters`](crate::Capabilities::fifo_waiters).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use distsync::store::memory::MemoryBackend;
/// use distsync::Coordinator;
/// let coordinator = Coordinator::new(MemoryBackend::new());
/// let session = coordinator.session().await?;
/// let mutex = coordinator.locker(&session, "jobs/nightly")?;
/// let guard = mutex.lock().await?;
/// // ... write to the protected resource, sending guard.token() along ...
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Locker: Send + Sync {
    /// The lock's name.
    fn name(&self) -> &Name;

    /// Waits until the lock is held.
    ///
    /// # Errors
    /// [`crate::Error::SessionLost`] if the session ends while waiting, or the store's
    /// error.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes removes
    /// this waiter's entry (or leaves it to the lease, which bounds it), and never
    /// leaves the lock held: a grant that races with the drop is released again.
    async fn lock(&self) -> Result<LockGuard>;

    /// Takes the lock if it is free now, without waiting.
    ///
    /// Returns `Ok(None)` when another holder has it.
    ///
    /// # Errors
    /// The store's error; [`crate::Error::SessionLost`] if the session is gone.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. It does not wait for a holder, only for the store's
    /// answer; dropping the future before it completes removes the entry it may have
    /// made (or leaves it to the lease) and never leaves the lock held.
    async fn try_lock(&self) -> Result<Option<LockGuard>>;

    /// How many contenders are registered in the store for this lock, the holder
    /// included (0: free). A snapshot for monitoring and tests (e.g. to wait, with a
    /// deadline, until a waiter is queued); it may be stale by the time it returns.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads.
    async fn contenders(&self) -> Result<usize>;

    /// How many times a wait through this handle was woken by the store to ask for
    /// the lock again, since the handle was made. A fair lock hands the lock over and
    /// wakes only the new holder; an [unfair](crate::lock_options::Fairness) one wakes
    /// the head of its wait line, which may lose to a newcomer and wait again. Summed
    /// over the handles of a name, against the releases made, it is the wake-ups per
    /// release: the measure of a thundering herd (the conformance suite bounds it).
    /// 0 from a locker that does not count them.
    fn wakeups(&self) -> u64 {
        0
    }
}
