//! Multi-lock: several named locks taken all or nothing, deadlock-free.
//!
//! A [`MultiLocker`] holds one [`Locker`] per distinct name, sorted in a canonical order
//! (the names' bytes). `lock()` takes them one by one in that order, whatever order the
//! caller named them in: two callers locking `{a, b}` and `{b, a}` both start with `a`,
//! so neither can hold one lock while waiting for the other's (the classic lock-ordering
//! argument). It is built on the backend's own [`Locker`]s, so it gives what they give
//! (FIFO waiters, fencing tokens, `lost()`) on every backend.

use std::fmt;
use std::sync::Arc;

use futures::future::{FutureExt, select_all};

use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::lock::Locker;
use crate::name::Name;
use crate::session::Lost;
use crate::token::FencingToken;

/// Several locks taken together (see the [module docs](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// let coordinator = distsync::connect("memory://").await?;
/// let session = coordinator.session().await?;
/// let accounts = coordinator.multi_locker(&session, &["accounts/b", "accounts/a"])?;
/// let guard = accounts.lock().await?;
/// assert_eq!(guard.names()[0].as_str(), "accounts/a");
/// for (name, token) in guard.tokens() {
///     // pass each token to the resource `name` protects
///     # let _ = (name, token);
/// }
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MultiLocker {
    /// One locker per distinct name, in canonical order.
    lockers: Vec<Arc<dyn Locker>>,
}

impl fmt::Debug for MultiLocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLocker")
            .field("names", &self.names())
            .finish()
    }
}

impl MultiLocker {
    /// A multi-lock over `lockers` (one per name; duplicates of a name are dropped).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `lockers` is empty.
    pub fn new(mut lockers: Vec<Arc<dyn Locker>>) -> Result<Self> {
        if lockers.is_empty() {
            return Err(Error::InvalidArgument(
                "a multi-lock needs at least one name".into(),
            ));
        }
        lockers.sort_by(|a, b| a.name().as_str().cmp(b.name().as_str()));
        lockers.dedup_by(|a, b| a.name() == b.name());
        Ok(Self { lockers })
    }

    /// The names, in the order they are locked.
    pub fn names(&self) -> Vec<&Name> {
        self.lockers.iter().map(|locker| locker.name()).collect()
    }

    /// Takes every lock, in canonical order; returns one guard for all.
    ///
    /// # Errors
    /// The first error of a part; the parts already taken are then released (in the
    /// background), so nothing stays held.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future releases the parts already taken (in the
    /// background) and withdraws the waiter of the part being waited for, as
    /// [`Locker::lock`] does.
    pub async fn lock(&self) -> Result<MultiLockGuard> {
        let mut guards = Vec::with_capacity(self.lockers.len());
        for locker in &self.lockers {
            guards.push(locker.lock().await?);
        }
        Ok(self.guard(guards))
    }

    /// Takes every lock if all are free now; `None` (holding nothing) otherwise.
    ///
    /// # Errors
    /// A part's error; what was taken is released.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Locker::try_lock`]: dropping the future releases the parts
    /// already taken.
    pub async fn try_lock(&self) -> Result<Option<MultiLockGuard>> {
        let mut guards = Vec::with_capacity(self.lockers.len());
        for locker in &self.lockers {
            match locker.try_lock().await? {
                Some(guard) => guards.push(guard),
                None => {
                    release_all(guards).await;
                    return Ok(None);
                }
            }
        }
        Ok(Some(self.guard(guards)))
    }

    fn guard(&self, guards: Vec<LockGuard>) -> MultiLockGuard {
        MultiLockGuard {
            names: self.lockers.iter().map(|l| l.name().clone()).collect(),
            guards,
        }
    }
}

/// Releases `guards` in reverse order, ignoring errors (the leases free what fails).
async fn release_all(guards: Vec<LockGuard>) {
    for guard in guards.into_iter().rev() {
        if let Err(error) = guard.unlock().await {
            tracing::debug!(%error, "releasing part of a multi-lock failed; its lease frees it");
        }
    }
}

/// Every lock of a [`MultiLocker`], held together.
///
/// Dropping it releases every part in the background, as a [`LockGuard`] does.
#[must_use = "the locks are released in the background as soon as the guard is dropped"]
pub struct MultiLockGuard {
    names: Vec<Name>,
    guards: Vec<LockGuard>,
}

impl fmt::Debug for MultiLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("names", &self.names)
            .field("parts", &self.guards)
            .finish()
    }
}

impl MultiLockGuard {
    /// The names held, in canonical order.
    pub fn names(&self) -> &[Name] {
        &self.names
    }

    /// Each part's guard, in canonical order.
    pub fn parts(&self) -> &[LockGuard] {
        &self.guards
    }

    /// Each part's name with its fencing token, in canonical order: pass each token
    /// to the resource its lock protects.
    pub fn tokens(&self) -> Vec<(Name, FencingToken)> {
        self.names
            .iter()
            .cloned()
            .zip(self.guards.iter().map(LockGuard::token))
            .collect()
    }

    /// Resolves when any part is lost.
    ///
    /// # Cancel safety
    /// Cancel safe; the future is `'static`.
    pub fn lost(&self) -> Lost {
        Lost::from_future(select_all(self.guards.iter().map(LockGuard::lost)).map(drop))
    }

    /// Whether any part is lost.
    pub fn is_lost(&self) -> bool {
        self.guards.iter().any(LockGuard::is_lost)
    }

    /// Releases every part (in reverse order).
    ///
    /// # Errors
    /// The first part's error ([`Error::SessionLost`] if a part had been lost); every
    /// part is released regardless.
    ///
    /// # Cancel safety
    /// Dropping the future part-way releases the remaining parts in the background.
    pub async fn unlock(self) -> Result<()> {
        let mut first = Ok(());
        for guard in self.guards.into_iter().rev() {
            let result = guard.unlock().await;
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}
