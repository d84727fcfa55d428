//! Taking a lock back from its holder: [`Coordinator::break_lock`] ends the holder's
//! session in the store (see [`crate::broken`]); [`Coordinator::request_release`] asks
//! the holder to let go (see [`crate::revocation`]).

use crate::broken::BrokenHold;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::name::Name;
use crate::revocation::ReleaseRequest;

impl Coordinator {
    /// Breaks the lock `name`: ends its holder's session in the store, as an operator
    /// would, and returns who held it and since when; `None` when nobody holds it.
    ///
    /// The break is safe for the resource the lock protects: the holder's guard sees
    /// `lost()` (its next renewal fails, so within its session's deadline), its
    /// `put_if_held` is refused, and the next grant's fencing token is higher. It ends
    /// **every** hold of the holder's session, not this lock's alone (on ZooKeeper,
    /// where only a session's owner can end it, the hold alone: see
    /// [`crate::broken`]). Waiters keep their places: the first of them is granted.
    ///
    /// ```
    /// # async fn demo(coordinator: distsync_core::Coordinator) -> distsync_core::Result<()> {
    /// match coordinator.break_lock("jobs/nightly").await? {
    ///     Some(hold) => tracing::info!(%hold, "broke the lock"),
    ///     None => tracing::info!("nobody held jobs/nightly"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`]; [`crate::Error::Unsupported`] where the backend
    /// cannot end another process's hold or does not record who holds a lock; the
    /// store's error.
    ///
    /// # Cancel safety
    /// Not atomic: dropping the future after the holder was read may or may not have
    /// ended its session. Calling it again is harmless: a hold already broken is gone
    /// (the answer is then the next holder, if any, whose session that call ends).
    pub async fn break_lock(&self, name: &str) -> Result<Option<BrokenHold>> {
        let name = Name::new(name)?;
        let broken = self.backend().break_lock(&name).await?;
        if let Some(hold) = &broken {
            tracing::info!(
                backend = self.capabilities().backend,
                %hold,
                "broke a lock by ending its holder's session"
            );
        }
        Ok(broken)
    }
}

impl Coordinator {
    /// Asks the holder of the lock `name` to release it: cooperative revocation, the
    /// polite form of [`Coordinator::break_lock`]. Returns the hold asked, or `None`
    /// when nobody holds the lock (then nothing is recorded and no later holder is
    /// asked). The holder learns of it through
    /// [`LockGuard::release_requested`](crate::LockGuard::release_requested) and decides when to unlock; see
    /// [`crate::revocation`] for the semantics and how soon it is seen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
    /// let coordinator = distsync_core::Coordinator::new(distsync_kv::memory::MemoryBackend::new());
    /// assert!(coordinator.request_release("jobs/nightly").await?.is_none());
    /// let session = coordinator.session().await?;
    /// let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
    /// let asked = coordinator.request_release("jobs/nightly").await?.expect("a holder");
    /// assert_eq!(asked.token, Some(guard.token()));
    /// guard.release_requested().await?;
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`]; [`crate::Error::Unsupported`] on a backend without
    /// [`Capabilities::release_request`](crate::Capabilities::release_request); the
    /// store's error.
    ///
    /// # Cancel safety
    /// Dropped part-way, the request was made or it was not; repeating it is harmless
    /// (several requests for one hold are one).
    pub async fn request_release(&self, name: &str) -> Result<Option<ReleaseRequest>> {
        let name = Name::new(name)?;
        let request = self.backend().request_release(&name).await?;
        match &request {
            Some(request) => tracing::info!(
                backend = self.capabilities().backend,
                %request,
                "asked the holder to release the lock"
            ),
            None => tracing::debug!(
                backend = self.capabilities().backend,
                lock = %name,
                "release request: nobody holds the lock"
            ),
        }
        Ok(request)
    }
}
