//! The handle users hold: a shared backend behind the metrics and tracing layer.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::backend::Backend;
use crate::barrier::{Barrier, DoubleBarrier};
use crate::capabilities::Capabilities;
use crate::counter::Counter;
use crate::election::Election;
use crate::error::{Error, Result};
use crate::instrument::{
    InstrumentedBarrier, InstrumentedDoubleBarrier, InstrumentedElection, InstrumentedLocker,
    InstrumentedQueue, InstrumentedRwLock, InstrumentedSemaphore,
};
use crate::latch::CountDownLatch;
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rate_limiter::{Rate, RateLimiter};
use crate::rwlock::RwLock;
use crate::session::{Session, SessionOptions};
use crate::status::StatusReport;
use crate::stm::Stm;
use crate::value_size::ValueLimit;

/// The handle an application holds: a shared backend plus conveniences that take
/// plain `&str` names and validate them.
///
/// # One rule for handles and inputs
///
/// - A handle the backend supplies is an `Arc<dyn Trait>`: [`Coordinator::locker`],
///   [`election`](Coordinator::election), [`rwlock`](Coordinator::rwlock),
///   [`queue`](Coordinator::queue), [`barrier`](Coordinator::barrier),
///   [`double_barrier`](Coordinator::double_barrier),
///   [`semaphore`](Coordinator::semaphore), [`counter`](Coordinator::counter),
///   [`latch`](Coordinator::latch) and [`rate_limiter`](Coordinator::rate_limiter).
/// - What the library builds on top is a concrete type: [`Coordinator::multi_locker`]
///   ([`MultiLocker`](crate::MultiLocker)), [`consumer`](Coordinator::consumer)
///   ([`Consumer`](crate::Consumer)), [`live_session`](Coordinator::live_session)
///   ([`LiveSession`](crate::LiveSession)), [`stm`](Coordinator::stm) ([`Stm`]),
///   [`session`](Coordinator::session) ([`Session`]).
/// - Every value parameter takes `impl Into<Bytes> + Send`, on the trait objects too
///   (`queue.enqueue("build")`, `election.campaign("node-1")`): see the crate docs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use distsync::store::memory::MemoryBackend;
/// use distsync::Coordinator;
/// let coordinator = Coordinator::new(MemoryBackend::new());
/// let queue = coordinator.queue("jobs")?;
/// queue.enqueue("build").await?;
/// assert_eq!(queue.dequeue().await?, "build");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("backend", &self.backend.capabilities().backend)
            .finish()
    }
}

impl Coordinator {
    /// A coordinator over `backend`.
    pub fn new(backend: impl Backend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// A coordinator over an already shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// What the backend offers and claims.
    pub fn capabilities(&self) -> &Capabilities {
        self.backend.capabilities()
    }

    /// A session with the default options: [`DEFAULT_TTL`](crate::DEFAULT_TTL) (15 s),
    /// renewed every 5 s, lost 3 s before the store could expire it. See
    /// [`crate::session`] for how to choose a TTL.
    ///
    /// # Errors
    /// As [`Coordinator::session_with`].
    ///
    /// # Cancel safety
    ///
    /// A session granted while the future is dropped is never renewed, so the store
    /// ends it after its TTL.
    pub async fn session(&self) -> Result<Session> {
        self.session_with(SessionOptions::default()).await
    }

    /// A session with the given options (TTL and safety margin).
    ///
    /// The options are checked before any I/O, as every backend checks them
    /// ([`Capabilities::check_session`]): the TTL against the backend's
    /// [`Capabilities::min_session_ttl`] and the margin against the TTL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use std::time::Duration;
    /// use distsync::SessionOptions;
    /// let coordinator = distsync::connect("memory://").await?;
    /// // A long batch job: a 2-minute lease, lost 30 s before the store could free it.
    /// let options = SessionOptions::with_ttl(Duration::from_secs(120))
    ///     .margin(Duration::from_secs(30));
    /// let session = coordinator.session_with(options).await?;
    /// assert_eq!(session.ttl(), Duration::from_secs(120));
    /// session.close().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TTL below the backend's minimum or a margin
    /// that leaves no room for a renewal (not below `2 ttl / 3`), before the store is
    /// asked; otherwise the store's error ([`Error::is_transient`] when it could not
    /// be reached).
    ///
    /// # Cancel safety
    ///
    /// As [`Coordinator::session`].
    pub async fn session_with(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities().check_session(&options)?;
        self.backend.session(options).await
    }

    fn backend_name(&self) -> &'static str {
        self.backend.capabilities().backend
    }

    /// The store's limit on a caller's value, which every handle this hands out
    /// checks (see [`crate::value_size`]).
    pub(crate) fn value_limit(&self) -> ValueLimit {
        ValueLimit::of(self.backend.capabilities())
    }

    /// See [`Backend::locker`]. Acquisitions, waits, holds and releases are traced and
    /// counted (see [`crate::instrument`]).
    ///
    /// Handles are cheap to clone (an `Arc`) and can be shared across tasks; two tasks
    /// locking through one handle (one session) take turns.
    pub fn locker(&self, session: &Session, name: &str) -> Result<Arc<dyn Locker>> {
        Ok(self.instrumented_locker(self.backend.locker(session, Name::new(name)?)?))
    }

    /// The store's locker `inner` with release requests and the metrics layer.
    fn instrumented_locker(&self, inner: Box<dyn Locker>) -> Arc<dyn Locker> {
        Arc::new(InstrumentedLocker {
            backend: self.backend_name(),
            limit: self.value_limit(),
            inner: Box::new(crate::revocable::RevocableLocker::new(
                self.backend.as_ref(),
                inner,
            )),
        })
    }

    /// [`Coordinator::locker`] with `options`: [unfair](crate::lock_options::Fairness)
    /// ([`Backend::unfair_locker`]: a release goes to the first to ask, for throughput
    /// under contention), and with a [lock-delay](crate::lock_delay), a grant that
    /// follows a holder's loss (a crash, a partition, an expiry) is withheld for the
    /// delay, for resources that cannot check fencing tokens. `lock` (bounded or not)
    /// and `try_lock` both honour it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use std::time::Duration;
    /// use distsync::lock::LockOptions;
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let options = LockOptions::new().lock_delay(Duration::from_secs(5));
    /// let guard = coordinator.locker_with(&session, "devices/printer", options)?.lock().await?;
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Coordinator::locker`]; [`Error::Unsupported`] for an unfair lock where the
    /// backend has none ([`Capabilities::unfair_lock`](crate::Capabilities::unfair_lock));
    /// with a lock-delay, [`Error::InvalidName`] for a name longer than 234 bytes (its
    /// record needs the room) and [`Error::Unsupported`] where the backend has no
    /// [`Counter`].
    pub fn locker_with(
        &self,
        session: &Session,
        name: &str,
        options: crate::lock_options::LockOptions,
    ) -> Result<Arc<dyn Locker>> {
        let inner = options.store_locker(self.backend.as_ref(), session, Name::new(name)?)?;
        crate::lock_delay::wrap(
            self.instrumented_locker(inner),
            |record| Ok(Arc::from(self.backend.counter(record)?)),
            options,
            self.backend_name(),
        )
    }

    /// A [`MultiLocker`](crate::multi_lock::MultiLocker) over `names`: all or nothing,
    /// locked in a canonical order whatever order they are given in (no deadlock).
    /// Each part is an instrumented [`Coordinator::locker`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name,
    /// [`Error::InvalidArgument`] for no name.
    pub fn multi_locker(
        &self,
        session: &Session,
        names: &[&str],
    ) -> Result<crate::multi_lock::MultiLocker> {
        let lockers = names
            .iter()
            .map(|name| self.locker(session, name))
            .collect::<Result<Vec<_>>>()?;
        crate::multi_lock::MultiLocker::new(lockers)
    }

    /// See [`Backend::election`]. Campaigns and terms are traced and counted; where the
    /// backend offers hand-overs, candidates step back for a named successor and
    /// leaderships can [`resign_to`](crate::Leadership::resign_to) (see
    /// [`crate::hand_over`]).
    pub fn election(&self, session: &Session, name: &str) -> Result<Arc<dyn Election>> {
        Ok(Arc::new(InstrumentedElection {
            backend: self.backend_name(),
            limit: self.value_limit(),
            inner: crate::hand_over::HandOverElection::wrap(
                &self.backend,
                session,
                self.backend.election(session, Name::new(name)?)?,
            ),
        }))
    }

    /// See [`Backend::rwlock`]. Read and write holds are traced and counted.
    pub fn rwlock(&self, session: &Session, name: &str) -> Result<Arc<dyn RwLock>> {
        Ok(Arc::new(InstrumentedRwLock {
            backend: self.backend_name(),
            limit: self.value_limit(),
            inner: self.backend.rwlock(session, Name::new(name)?)?,
        }))
    }

    /// See [`Backend::queue`]. Enqueues and dequeues are counted.
    pub fn queue(&self, name: &str) -> Result<Arc<dyn Queue>> {
        Ok(Arc::new(InstrumentedQueue {
            backend: self.backend_name(),
            limit: self.value_limit(),
            inner: self.backend.queue(Name::new(name)?)?,
        }))
    }

    /// See [`Backend::barrier`]. Waits are traced and counted.
    pub fn barrier(&self, name: &str) -> Result<Arc<dyn Barrier>> {
        Ok(Arc::new(InstrumentedBarrier {
            backend: self.backend_name(),
            inner: self.backend.barrier(Name::new(name)?)?,
        }))
    }

    /// See [`Backend::double_barrier`]. Entries, waits and participations are traced
    /// and counted.
    ///
    /// `count` is a plain `usize` for the caller's ease; it is checked here, once,
    /// and reaches the backend as a [`NonZeroUsize`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name, [`Error::InvalidArgument`] for a
    /// `count` of zero (before the backend is asked), or the backend's error.
    pub fn double_barrier(
        &self,
        session: &Session,
        name: &str,
        count: usize,
    ) -> Result<Arc<dyn DoubleBarrier>> {
        let name = Name::new(name)?;
        let count = non_zero(count, || {
            format!(
                "double barrier {:?}: count must be at least 1",
                name.as_str()
            )
        })?;
        Ok(Arc::new(InstrumentedDoubleBarrier {
            backend: self.backend_name(),
            inner: self.backend.double_barrier(session, name, count)?,
            session: session.clone(),
            entered: std::sync::Mutex::new(None),
        }))
    }

    /// See [`Backend::semaphore`]. Acquisitions, waits and holds of permits are traced
    /// and counted.
    ///
    /// `permits` is a plain `usize` for the caller's ease (as
    /// `tokio::sync::Semaphore::new`); it is checked here, once, and reaches the
    /// backend as a [`NonZeroUsize`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name, [`Error::InvalidArgument`] for zero
    /// `permits` (before the backend is asked), [`Error::Unsupported`] where the
    /// backend has no semaphore, or the backend's error.
    pub fn semaphore(
        &self,
        session: &Session,
        name: &str,
        permits: usize,
    ) -> Result<Arc<dyn crate::semaphore::Semaphore>> {
        let name = Name::new(name)?;
        let permits = non_zero(permits, || {
            format!("semaphore {:?}: permits must be at least 1", name.as_str())
        })?;
        Ok(Arc::new(InstrumentedSemaphore {
            backend: self.backend_name(),
            limit: self.value_limit(),
            inner: self.backend.semaphore(session, name, permits)?,
        }))
    }

    /// Who holds what under a prefix of names: see [`Backend::status`] and
    /// [`crate::status`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use distsync::store::memory::MemoryBackend;
    /// use distsync::{store::status::LineKind, Coordinator};
    /// let coordinator = Coordinator::new(MemoryBackend::new());
    /// let session = coordinator.session().await?;
    /// let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
    /// let report = coordinator.status("jobs/").await?;
    /// let line = report.line(LineKind::Lock, "jobs/nightly").expect("held");
    /// assert_eq!(line.holders[0].token, Some(guard.token()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn status(&self, prefix: &str) -> Result<StatusReport> {
        self.backend.status(prefix).await
    }

    /// The shared counter `name` (see [`crate::counter`]). No I/O.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for a bad name, one ending in
    /// `/`[`crate::lock_delay::RECORD_SEGMENT`] or
    /// `/`[`crate::revocation::REQUEST_SEGMENT`] or one of the hand-over records'
    /// segments ([`crate::hand_over_record`]);
    /// [`crate::Error::Unsupported`] where the backend
    /// has no counter.
    pub fn counter(&self, name: &str) -> Result<Arc<dyn Counter>> {
        if crate::lock_delay::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for lock-delay records",
            });
        }
        if crate::revocation::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for release requests",
            });
        }
        if crate::hand_over_record::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for leadership hand-over records",
            });
        }
        Ok(Arc::from(self.backend().counter(Name::new(name)?)?))
    }

    /// The count-down latch `name` of initial count `count` (see [`crate::latch`]).
    /// No I/O.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for a bad name; [`crate::Error::Unsupported`] where the backend
    /// has no latch.
    pub fn latch(&self, name: &str, count: u64) -> Result<Arc<dyn CountDownLatch>> {
        Ok(Arc::from(self.backend().latch(Name::new(name)?, count)?))
    }

    /// The rate limiter `name` at `rate` (see [`Backend::rate_limiter`] and
    /// [`crate::rate_limiter`]).
    ///
    /// [`Backend::rate_limiter`]: crate::backend::Backend::rate_limiter
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name; [`Error::Unsupported`] where the backend
    /// has no rate limiter (etcd); before any I/O.
    pub fn rate_limiter(&self, name: &str, rate: Rate) -> Result<Arc<dyn RateLimiter>> {
        let name = Name::new(name)?;
        let capabilities = self.capabilities();
        if !capabilities.rate_limiter {
            return Err(Error::unsupported(capabilities.backend, "rate limiter"));
        }
        Ok(Arc::from(self.backend().rate_limiter(name, rate)?))
    }

    /// The backend's software transactional memory; run transactions with
    /// [`Stm::atomically`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the backend offers no STM.
    pub fn stm(&self) -> Result<Stm> {
        Ok(self.backend.stm()?.with_value_limit(self.value_limit()))
    }
}

/// `value` as a [`NonZeroUsize`], or [`Error::InvalidArgument`] with the message `what`
/// gives: the one place a user's count or permit number is checked, so that no
/// backend needs to.
fn non_zero(value: usize, what: impl FnOnce() -> String) -> Result<NonZeroUsize> {
    NonZeroUsize::new(value).ok_or_else(|| Error::InvalidArgument(what()))
}
