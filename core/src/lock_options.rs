//! The options of a lock handle: its fairness and its lock-delay.

use std::time::Duration;

use crate::backend::Backend;
use crate::error::Result;
use crate::lock::Locker;
use crate::name::Name;
use crate::session::Session;

/// Who gets a lock that is released while others wait for it.
///
/// | | [`Fair`](Fairness::Fair) (the default) | [`Unfair`](Fairness::Unfair) |
/// |---|---|---|
/// | grant order | arrival order: the longest waiter is next | whoever asks first after a
/// release, a newcomer included | | a release wakes | the next waiter, granted in the
/// release's step | one waiter (the head of the wait line), which then asks again | |
/// starvation | none | a waiter can lose to newcomers again and again | | contended
/// throughput | each hand-over waits for the next waiter to learn it holds | a holder that
/// locks again at once keeps the lock without a hand-over | | store calls per uncontended
/// cycle | as the store's fair protocol needs | the fewest the store allows (one to take,
/// one to release) |
///
/// Both keep everything else: the [fencing token](crate::LockGuard::token) that only
/// grows, [`lost()`](crate::LockGuard::lost) before the store can grant anyone else,
/// the [lock-delay](crate::lock_delay), `while_held`, `put_if_held`,
/// [release requests](crate::revocation) and [breaking](crate::broken). The matrix in
/// `docs/GUARANTEES.md` has rows for each.
///
/// **Choose unfair** for a lock taken often and held briefly by many contenders that
/// do the same work (a cache fill, a rate of writes to one row): throughput counts
/// and no particular contender needs its turn; this is what Redisson's `RLock`,
/// `rslock` and Java's `ReentrantLock` give by default. **Choose fair** when a
/// contender must not wait forever (a job runner, a per-tenant lock a slow replica
/// must get too), or when waits must be bounded by the line ahead.
///
/// Fairness belongs to the lock's protocol, so give every locker of one name the
/// same. Mixed on one name, the two still exclude each other on every store, but an
/// unfair contender then waits behind the fair line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fairness {
    /// Waiters are granted in arrival order
    /// ([`fifo_waiters`](crate::Capabilities::fifo_waiters) says where the store gives
    /// it).
    #[default]
    Fair,
    /// The first to ask after a release wins; a release wakes one waiter, not all
    /// ([`unfair_lock`](crate::Capabilities::unfair_lock) says where the store has it).
    Unfair,
}

/// Options of a lock handle (see [`Coordinator::locker_with`](crate::Coordinator::locker_with)).
///
/// ```
/// use std::time::Duration;
/// use distsync::lock::{Fairness, LockOptions};
/// let options = LockOptions::new().lock_delay(Duration::from_secs(5));
/// assert_eq!(options.delay(), Duration::from_secs(5));
/// assert_eq!(LockOptions::default().delay(), Duration::ZERO);
/// assert_eq!(LockOptions::new().unfair().fairness(), Fairness::Unfair);
/// assert_eq!(LockOptions::default().fairness(), Fairness::Fair);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    lock_delay: Duration,
    fairness: Fairness,
}

impl LockOptions {
    /// The defaults: a fair lock with no lock-delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// After a holder lost the lock without releasing it, withholds the next grant
    /// for `delay` (see [`crate::lock_delay`]). Zero (the default) turns it off.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// Makes the lock [unfair](Fairness::Unfair) (the default is
    /// [`Fairness::Fair`]).
    pub fn unfair(mut self) -> Self {
        self.fairness = Fairness::Unfair;
        self
    }

    /// The lock-delay.
    pub fn delay(&self) -> Duration {
        self.lock_delay
    }

    /// The lock's fairness.
    pub fn fairness(&self) -> Fairness {
        self.fairness
    }

    /// The store's lock of this fairness: [`Primitives::locker`](crate::raw::Primitives::locker) or
    /// [`Primitives::unfair_locker`](crate::raw::Primitives::unfair_locker).
    pub(crate) fn store_locker(
        &self,
        backend: &dyn Backend,
        session: &Session,
        name: Name,
    ) -> Result<Box<dyn Locker>> {
        match self.fairness {
            Fairness::Fair => backend.locker(session, name),
            Fairness::Unfair => backend.unfair_locker(session, name),
        }
    }
}
