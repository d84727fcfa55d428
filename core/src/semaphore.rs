//! The counting semaphore: `permits` holders at once, each holding one permit through
//! its session.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::guard::LockGuard;
use crate::name::Name;
use crate::token::FencingToken;

/// One of a [`Semaphore`]'s permits, held through a session.
///
/// A permit is one of `permits` exclusive slots, guarded, fenced and released as a
/// lock's hold is: it has a [`Permit::token`] greater than every earlier grant's,
/// [`Permit::lost`], [`Permit::while_held`], [`Permit::put_if_held`] and
/// [`Permit::release`]. Dropping it without [`Permit::release`] releases it in the
/// background where a tokio runtime is present, and by lease expiry otherwise.
#[must_use = "the permit is released in the background as soon as it is dropped"]
pub struct Permit {
    guard: LockGuard,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.key())
            .field("token", &self.token())
            .field("lost", &self.known_lost())
            .finish()
    }
}

impl Permit {
    /// The permit a backend granted as `guard`. For backends, through `raw::permit`.
    pub(crate) fn new(guard: LockGuard) -> Self {
        Self { guard }
    }

    /// This permit, its [`Permit::put_if_held`] refusing a value above `limit`.
    pub(crate) fn with_value_limit(self, limit: crate::value_size::ValueLimit) -> Self {
        Self {
            guard: self.guard.with_value_limit(limit),
        }
    }

    /// The fencing token of this grant; strictly greater than every earlier grant's.
    pub fn token(&self) -> FencingToken {
        self.guard.token()
    }

    crate::guard::guard_accessors!(guard.held);

    /// Writes `value` to the STM key `key` only while this permit is held, checked by
    /// the store in the same atomic step as the write: as
    /// [`LockGuard::put_if_held`].
    ///
    /// # Errors
    /// [`Error::NotHeld`](crate::Error::NotHeld) when the permit is no longer held
    /// (nothing written); as [`LockGuard::put_if_held`] otherwise.
    ///
    /// # Cancel safety
    /// One atomic write: dropped part-way, it happened or it did not.
    pub async fn put_if_held(&self, key: &str, value: impl Into<Bytes> + Send) -> Result<()> {
        self.guard.put_if_held(key, value).await
    }

    /// Gives the permit back and waits until the store has taken it back.
    ///
    /// # Errors
    /// [`Error::SessionLost`](crate::Error::SessionLost) if the permit had already been
    /// lost (the work it guarded may have overlapped another holder's), or the store's
    /// error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future part-way does not stop the release: it goes on in the
    /// background, as when the permit is dropped.
    pub async fn release(self) -> Result<()> {
        self.guard.unlock().await
    }
}

/// A counting semaphore: at most [`Semaphore::permits`] holders at once, each holding
/// one permit through its session (a permit is freed when the session ends, as a lock
/// is). Waiters are granted in arrival order, and only the waiter next in line is
/// woken. Every grant carries a fencing token greater than every earlier grant's.
///
/// The permit count is part of the semaphore's state: while a semaphore has holders or
/// waiters, a client naming another count gets [`crate::Error::InvalidArgument`] (no
/// silent disagreement). A [`Permit`] has a fencing token, `lost()`, `while_held()`
/// and `release()`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// let coordinator = distsync::connect("memory://").await?;
/// let session = coordinator.session().await?;
/// let pool = coordinator.semaphore(&session, "db/connections", 3)?;
/// let permit = pool.acquire().await?;
/// assert!(format!("{permit:?}").starts_with("Permit"));
/// // ... use one of the three slots, passing permit.token() along ...
/// permit.release().await?;
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
