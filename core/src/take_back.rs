//! [`Coordinator::break_lock`]: ending another process's hold of a lock, by ending its
//! session in the store (see [`crate::broken`]).

use crate::broken::BrokenHold;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::name::Name;

impl Coordinator {
    /// Breaks the lock `name`: ends its holder's session in the store, as an operator
    /// would, and returns who held it and since when; `None` when nobody holds it.
    ///
    /// The break is safe for the resource the lock protects: the holder's guard sees
    /// `lost()` (its next renewal fails, so within its session's deadline), its
    /// `put_if_held` is refused, and the next grant's fencing token is higher. It ends
    /// **every** hold of the holder's session, not this lock's alone (see
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
    /// cannot end another process's session (ZooKeeper) or does not record who holds
    /// a lock; the store's error.
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
