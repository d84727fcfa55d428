//! A backend's primitives under the layers core puts on every handle it hands out:
//! release requests on a lock ([`crate::revocation`]), hand-overs on an election
//! ([`crate::hand_over`]), the store's limit on a caller's value
//! ([`crate::value_size`]), and the metrics and tracing layer ([`crate::instrument`]).
//!
//! One function per primitive, over the shared backend alone. The
//! [`Coordinator`](crate::Coordinator)'s factories check their input and call these;
//! so do the protocols built on handles (`lead`, `consumer`, `shards`,
//! `scheduled_job`), which therefore hold the backend, not a coordinator, and use the
//! same handles a user's code gets.

use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::backend::Backend;
use crate::barrier::{Barrier, DoubleBarrier};
use crate::election::Election;
use crate::error::Result;
use crate::hand_over::HandOverElection;
use crate::instrument::{Instrumented, InstrumentedDoubleBarrier};
use crate::lock::Locker;
use crate::lock_options::LockOptions;
use crate::name::Name;
use crate::queue::Queue;
use crate::revocable::RevocableLocker;
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;
use crate::session::{Session, SessionOptions};
use crate::stm::Stm;

/// A session of `backend` with `options`, checked before any I/O
/// ([`Capabilities::check_session`](crate::Capabilities::check_session)).
pub(crate) async fn session(backend: &dyn Backend, options: SessionOptions) -> Result<Session> {
    backend.capabilities().check_session(&options)?;
    backend.session(options).await
}

/// The store's lock `name`, with release requests and the metrics layer.
pub(crate) fn locker(
    backend: &Arc<dyn Backend>,
    session: &Session,
    name: Name,
) -> Result<Arc<dyn Locker>> {
    Ok(layered_locker(backend, backend.locker(session, name)?))
}

/// The store's lock `name` of `options`' fairness, with release requests, the metrics
/// layer and, outermost, `options`' lock-delay (see [`crate::lock_delay`]).
pub(crate) fn locker_with(
    backend: &Arc<dyn Backend>,
    session: &Session,
    name: Name,
    options: LockOptions,
) -> Result<Arc<dyn Locker>> {
    let inner = options.store_locker(backend.as_ref(), session, name)?;
    crate::lock_delay::wrap(layered_locker(backend, inner), backend.as_ref(), options)
}

/// The store's locker `inner` with release requests and the metrics layer.
fn layered_locker(backend: &Arc<dyn Backend>, inner: Box<dyn Locker>) -> Arc<dyn Locker> {
    let revocable: Box<dyn Locker> = Box::new(RevocableLocker::new(backend.as_ref(), inner));
    Arc::new(Instrumented::new(backend.as_ref(), revocable))
}

/// The store's election `name`, with hand-overs where the backend offers them and the
/// metrics layer.
pub(crate) fn election(
    backend: &Arc<dyn Backend>,
    session: &Session,
    name: Name,
) -> Result<Arc<dyn Election>> {
    let inner = HandOverElection::wrap(backend, session, backend.election(session, name)?);
    Ok(Arc::new(Instrumented::new(backend.as_ref(), inner)))
}

/// The store's read-write lock `name`, with the metrics layer.
pub(crate) fn rwlock(
    backend: &dyn Backend,
    session: &Session,
    name: Name,
) -> Result<Arc<dyn RwLock>> {
    let inner = backend.rwlock(session, name)?;
    Ok(Arc::new(Instrumented::new(backend, inner)))
}

/// The store's queue `name`, with the metrics layer.
pub(crate) fn queue(backend: &dyn Backend, name: Name) -> Result<Arc<dyn Queue>> {
    Ok(Arc::new(Instrumented::new(backend, backend.queue(name)?)))
}

/// The store's barrier `name`, with the metrics layer.
pub(crate) fn barrier(backend: &dyn Backend, name: Name) -> Result<Arc<dyn Barrier>> {
    Ok(Arc::new(Instrumented::new(backend, backend.barrier(name)?)))
}

/// The store's double barrier `name` of `count` participants, with the metrics layer.
pub(crate) fn double_barrier(
    backend: &dyn Backend,
    session: &Session,
    name: Name,
    count: NonZeroUsize,
) -> Result<Arc<dyn DoubleBarrier>> {
    Ok(Arc::new(InstrumentedDoubleBarrier {
        backend: backend.capabilities().backend,
        inner: backend.double_barrier(session, name, count)?,
        session: session.clone(),
        entered: std::sync::Mutex::new(None),
    }))
}

/// The store's semaphore `name` of `permits` permits, with the metrics layer.
pub(crate) fn semaphore(
    backend: &dyn Backend,
    session: &Session,
    name: Name,
    permits: NonZeroUsize,
) -> Result<Arc<dyn Semaphore>> {
    let inner = backend.semaphore(session, name, permits)?;
    Ok(Arc::new(Instrumented::new(backend, inner)))
}

/// The store's STM, checking every write against the store's value limit.
pub(crate) fn stm(backend: &dyn Backend) -> Result<Stm> {
    Ok(backend
        .stm()?
        .with_value_limit(backend.capabilities().value_limit()))
}
