//! How a store's handles are made, and the factories of [`Primitives`] written once
//! for every store ([`impl_primitives!`](crate::impl_primitives)).
//!
//! A store names the type of each of its handles and says how one is made from the
//! store's context and what the kind takes ([`Make`]); what every store's factories
//! share (taking the session's lease for the handles bound to one, boxing the handle)
//! is the macro's. A macro rather than a generic `impl<S: Store> Primitives for S`:
//! such a trait would name each handle's type in a public associated type, and every
//! store's handles, sessions and shared state would become its public API.
//!
//! [`Primitives`]: crate::raw::Primitives

use crate::name::Name;
use crate::session::Session;

/// How a store's handle is made: from the store's context `C` (what every handle of
/// the store is built from: its connection and settings) and `A`, what the kind
/// takes: [`OnSession`] for a handle bound to a session, a [`Name`] for one that is
/// not, with a count, an initial count or a rate beside it where the kind has one,
/// nothing for the STM engine. No I/O.
pub trait Make<C, A>: Sized {
    /// The handle for `with`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a count or rate the store cannot hold.
    fn make(context: &C, with: A) -> crate::Result<Self>;
}

/// What a handle bound to a session is made from: the session, the store's lease of
/// it (checked to be this store's), and the handle's name.
#[derive(Debug)]
pub struct OnSession<L> {
    /// The session the handle holds, campaigns or waits through.
    pub session: Session,
    /// The store's side of that session.
    pub lease: L,
    /// The primitive's name.
    pub name: Name,
}

/// Implements [`Primitives`](crate::raw::Primitives) for a store's backend type from
/// the types of its handles, each made by [`Make`](crate::raw::Make).
///
/// The backend type keeps its [`Capabilities`](crate::Capabilities) in a field
/// `capabilities`, and has two methods of its own that the factories call:
/// `fn context(&self) -> &C`, what every handle is made from, and
/// `fn lease(&self, session: &Session) -> Result<L>`, the store's side of a session
/// (refusing a session of another backend); the handles bound to a session are made
/// from [`OnSession<L>`](crate::raw::OnSession).
///
/// ```ignore
/// distsync::store::raw::impl_primitives!(ZkBackend {
///     locker: ZkLocker,
///     unfair_locker: ZkUnfairLocker,
///     election: ZkElection,
///     rwlock: ZkRwLock,
///     semaphore: ZkSemaphore,           // Make<C, (OnSession<L>, NonZeroUsize)>
///     double_barrier: ZkDoubleBarrier,  // Make<C, (OnSession<L>, NonZeroUsize)>
///     queue: ZkQueue,                   // Make<C, Name>
///     barrier: ZkBarrier,               // Make<C, Name>
///     counter: ZkCounter,               // Make<C, Name>
///     latch: ZkLatch,                   // Make<C, (Name, u64)>
///     rate_limiter: ZkRateLimiter,      // Make<C, (Name, Rate)>
///     stm: ZkStm,                       // Make<C, ()>, an StmEngine
/// });
/// ```
#[macro_export]
macro_rules! impl_primitives {
    ($backend:ty {
        locker: $locker:ty,
        unfair_locker: $unfair_locker:ty,
        election: $election:ty,
        rwlock: $rwlock:ty,
        semaphore: $semaphore:ty,
        double_barrier: $double_barrier:ty,
        queue: $queue:ty,
        barrier: $barrier:ty,
        counter: $counter:ty,
        latch: $latch:ty,
        rate_limiter: $rate_limiter:ty,
        stm: $stm:ty $(,)?
    }) => {
        impl $crate::raw::Primitives for $backend {
            fn capabilities(&self) -> &$crate::Capabilities {
                &self.capabilities
            }

            $crate::impl_primitives!(@on_session locker, $locker, $crate::raw::Locker);
            $crate::impl_primitives!(@on_session unfair_locker, $unfair_locker, $crate::raw::Locker);
            $crate::impl_primitives!(@on_session election, $election, $crate::raw::Election);
            $crate::impl_primitives!(@on_session rwlock, $rwlock, $crate::raw::RwLock);

            fn semaphore(
                &self,
                session: &$crate::Session,
                name: $crate::Name,
                permits: ::std::num::NonZeroUsize,
            ) -> $crate::Result<Box<dyn $crate::raw::Semaphore>> {
                let on = $crate::impl_primitives!(@on self, session, name);
                $crate::impl_primitives!(@make $semaphore, self, (on, permits))
            }

            fn double_barrier(
                &self,
                session: &$crate::Session,
                name: $crate::Name,
                count: ::std::num::NonZeroUsize,
            ) -> $crate::Result<Box<dyn $crate::raw::DoubleBarrier>> {
                let on = $crate::impl_primitives!(@on self, session, name);
                $crate::impl_primitives!(@make $double_barrier, self, (on, count))
            }

            fn queue(&self, name: $crate::Name) -> $crate::Result<Box<dyn $crate::raw::Queue>> {
                $crate::impl_primitives!(@make $queue, self, name)
            }

            fn barrier(
                &self,
                name: $crate::Name,
            ) -> $crate::Result<Box<dyn $crate::raw::Barrier>> {
                $crate::impl_primitives!(@make $barrier, self, name)
            }

            fn counter(&self, name: $crate::Name) -> $crate::Result<Box<dyn $crate::Counter>> {
                $crate::impl_primitives!(@make $counter, self, name)
            }

            fn latch(
                &self,
                name: $crate::Name,
                count: u64,
            ) -> $crate::Result<Box<dyn $crate::CountDownLatch>> {
                $crate::impl_primitives!(@make $latch, self, (name, count))
            }

            fn rate_limiter(
                &self,
                name: $crate::Name,
                rate: $crate::Rate,
            ) -> $crate::Result<Box<dyn $crate::RateLimiter>> {
                $crate::impl_primitives!(@make $rate_limiter, self, (name, rate))
            }

            fn stm(&self) -> $crate::Result<$crate::Stm> {
                let engine = <$stm as $crate::raw::Make<_, _>>::make(self.context(), ())?;
                Ok($crate::Stm::new(::std::sync::Arc::new(engine)))
            }
        }
    };
    // A factory of a handle bound to a session that takes nothing else.
    (@on_session $factory:ident, $handle:ty, $kind:path) => {
        fn $factory(
            &self,
            session: &$crate::Session,
            name: $crate::Name,
        ) -> $crate::Result<Box<dyn $kind>> {
            let on = $crate::impl_primitives!(@on self, session, name);
            $crate::impl_primitives!(@make $handle, self, on)
        }
    };
    (@make $handle:ty, $backend:ident, $with:expr) => {
        Ok(Box::new(<$handle as $crate::raw::Make<_, _>>::make($backend.context(), $with)?))
    };
    (@on $backend:ident, $session:ident, $name:ident) => {
        $crate::raw::OnSession {
            lease: $backend.lease($session)?,
            session: $session.clone(),
            name: $name,
        }
    };
}
