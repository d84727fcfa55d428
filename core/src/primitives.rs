//! What a backend makes: one handle per primitive, for a name.

use std::num::NonZeroUsize;

use crate::barrier::{Barrier, DoubleBarrier};
use crate::capabilities::Capabilities;
use crate::counter::Counter;
use crate::election::Election;
use crate::error::Result;
use crate::latch::CountDownLatch;
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rate_limiter::{Rate, RateLimiter};
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;
use crate::session::Session;
use crate::stm::Stm;

/// The primitives a [`Backend`](crate::raw::Backend) makes, apart from its sessions and
/// the operators' reads and writes. Object-safe, as `Backend` is.
///
/// A store writes them with [`impl_primitives!`](crate::impl_primitives) from the
/// types of its handles; a backend that wraps another (a test double, a layer)
/// implements them itself.
///
/// Factories do no I/O. A primitive the backend does not offer is
/// [`crate::Error::Unsupported`], as its [`Capabilities`](crate::Capabilities) say;
/// a session from another backend is [`crate::Error::InvalidArgument`].
pub trait Primitives: Send + Sync {
    /// What the backend offers and claims.
    fn capabilities(&self) -> &Capabilities;

    /// A mutex named `name`, held through `session`.
    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>>;

    /// An unfair mutex named `name`, held through `session`: a release goes to the
    /// first contender to ask, a newcomer included, and wakes one waiter, not all
    /// (see [`crate::lock_options::Fairness`]). Everything else is as
    /// [`Primitives::locker`]: fencing tokens that only grow, the hold's `lost()` before
    /// the store can grant anyone else, guarded writes. It and the fair lock of the
    /// same name exclude each other.
    ///
    /// The default is [`crate::Error::Unsupported`], for a backend without
    /// [`Capabilities::unfair_lock`].
    fn unfair_locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        let _ = (session, name);
        Err(unsupported(self, "the unfair lock"))
    }

    /// An election named `name`, campaigning through `session`.
    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>>;

    /// A read-write lock named `name`, held through `session`.
    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>>;

    /// The counting semaphore `name` of `permits` permits, acquired through
    /// `session`.
    ///
    /// `permits` is a [`NonZeroUsize`] so that a backend never sees zero: the caller
    /// rules it out once ([`crate::Coordinator::semaphore`] turns a zero `usize` into
    /// [`crate::Error::InvalidArgument`]).
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] (the default) where the backend has none.
    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: NonZeroUsize,
    ) -> Result<Box<dyn Semaphore>> {
        let _ = (session, name, permits);
        Err(unsupported(self, "semaphore"))
    }

    /// A double barrier named `name` for `count` participants, entered through
    /// `session`.
    ///
    /// `count` is a [`NonZeroUsize`] so that a backend never sees zero: the caller
    /// rules it out once ([`crate::Coordinator::double_barrier`] turns a zero `usize`
    /// into [`crate::Error::InvalidArgument`]).
    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>>;

    /// A durable queue named `name`.
    fn queue(&self, name: Name) -> Result<Box<dyn Queue>>;

    /// A durable barrier named `name`.
    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>>;

    /// The shared counter `name` (see [`crate::counter`]): a counter that was never
    /// written reads 0.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] (the default) where the backend has none.
    fn counter(&self, name: Name) -> Result<Box<dyn Counter>> {
        let _ = name;
        Err(unsupported(self, "counter"))
    }

    /// The count-down latch `name` of initial count `count` (see [`crate::latch`]):
    /// the first `count_down` creates the latch in the store.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] (the default) where the backend has none.
    fn latch(&self, name: Name, count: u64) -> Result<Box<dyn CountDownLatch>> {
        let _ = (name, count);
        Err(unsupported(self, "latch"))
    }

    /// The rate limiter `name` at `rate`, decided on the store's clock (see
    /// [`crate::rate_limiter`]).
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] (the default) where the backend has none.
    fn rate_limiter(&self, name: Name, rate: Rate) -> Result<Box<dyn RateLimiter>> {
        let _ = (name, rate);
        Err(unsupported(self, "rate limiter"))
    }

    /// The STM over this backend's key-value space: the user's [`Stm`] handle around
    /// the backend's [`StmEngine`](crate::raw::StmEngine), made with `Stm::new`.
    fn stm(&self) -> Result<Stm>;
}

/// What a primitive the backend does not offer answers.
fn unsupported<P: Primitives + ?Sized>(backend: &P, what: &str) -> crate::Error {
    crate::Error::unsupported(backend.capabilities().backend, what)
}
