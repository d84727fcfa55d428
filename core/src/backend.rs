//! The backend trait and the `Coordinator` handle users hold.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::barrier::{Barrier, DoubleBarrier};
use crate::capabilities::Capabilities;
use crate::election::Election;
use crate::error::Result;
use crate::instrument::{
    InstrumentedBarrier, InstrumentedDoubleBarrier, InstrumentedElection, InstrumentedLocker,
    InstrumentedQueue, InstrumentedRwLock, InstrumentedSemaphore,
};
use crate::lock::Locker;
use crate::migrate::Snapshot;
use crate::name::Name;
use crate::queue::Queue;
use crate::rwlock::RwLock;
use crate::session::{Session, SessionId, SessionOptions};
use crate::status::StatusReport;
use crate::stm::Stm;

/// A coordination store: grants sessions and makes primitives. Object-safe, so a
/// backend can be chosen at run time (`Arc<dyn Backend>`).
///
/// Factories do no I/O; a primitive the backend does not offer is
/// [`crate::Error::Unsupported`] there, as its [`Capabilities`] say. Sessions passed
/// in must come from this backend ([`crate::Error::InvalidArgument`] otherwise).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What the backend offers and claims.
    fn capabilities(&self) -> &Capabilities;

    /// Opens a session (a lease) kept alive in the background.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a TTL below
    /// [`Capabilities::min_session_ttl`], or the store's error.
    async fn session(&self, options: SessionOptions) -> Result<Session>;

    /// Ends a session from the store side, as an operator would (etcd: lease revoke).
    /// Everything held through it is released; its owner learns through `lost()`.
    async fn revoke_session(&self, id: SessionId) -> Result<()>;

    /// A mutex named `name`, held through `session`.
    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>>;

    /// An election named `name`, campaigning through `session`.
    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>>;

    /// A read-write lock named `name`, held through `session`.
    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>>;

    /// A durable queue named `name`.
    fn queue(&self, name: Name) -> Result<Box<dyn Queue>>;

    /// A durable barrier named `name`.
    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>>;

    /// A double barrier named `name` for `count` participants, entered through
    /// `session`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a `count` of zero.
    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: usize,
    ) -> Result<Box<dyn DoubleBarrier>>;

    /// The STM over this backend's key-value space: the user's [`Stm`] handle around
    /// the backend's [`StmEngine`](crate::raw::StmEngine), made with `Stm::new`.
    fn stm(&self) -> Result<Stm>;

    /// The counting semaphore `name` of `permits` permits, acquired through
    /// `session`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for zero permits;
    /// [`crate::Error::Unsupported`] (the default) where the backend has none.
    fn semaphore(
        &self,
        session: &Session,
        name: Name,
        permits: usize,
    ) -> Result<Box<dyn crate::semaphore::Semaphore>> {
        let _ = (session, name, permits);
        Err(crate::Error::unsupported(
            self.capabilities().backend,
            "semaphore",
        ))
    }

    /// Reads the durable state under this backend's namespace (queues, STM keys, held
    /// barriers) and lists its live holds, for [`crate::migrate::migrate`]. Reads only.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] where the backend cannot enumerate its state.
    async fn export(&self) -> Result<Snapshot> {
        Err(crate::Error::unsupported(
            self.capabilities().backend,
            "export (migration)",
        ))
    }

    /// Who holds what: the live locks, elections, read-write locks and semaphores
    /// (holders, waiters in order, leaders), non-empty queues and held barriers whose
    /// names start with `prefix` (empty: all), under this backend's namespace. Reads
    /// only; see [`crate::status`] for what each store records.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] (the default) where the backend cannot list its
    /// state; the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn status(&self, prefix: &str) -> Result<StatusReport> {
        let _ = prefix;
        Err(crate::Error::unsupported(
            self.capabilities().backend,
            "status",
        ))
    }
}

/// The handle an application holds: a shared backend plus conveniences that take
/// plain `&str` names and validate them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
/// use distsync_core::{memory::MemoryBackend, Coordinator};
/// let coordinator = Coordinator::new(MemoryBackend::new());
/// let queue = coordinator.queue("jobs")?;
/// queue.enqueue("build".into()).await?;
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

    /// A session with the default TTL (60 s).
    ///
    /// # Cancel safety
    ///
    /// A session granted while the future is dropped is never renewed, so the store
    /// ends it after its TTL.
    pub async fn session(&self) -> Result<Session> {
        self.backend.session(SessionOptions::default()).await
    }

    /// A session with the given TTL.
    ///
    /// # Cancel safety
    ///
    /// As [`Coordinator::session`].
    pub async fn session_with_ttl(&self, ttl: Duration) -> Result<Session> {
        self.backend.session(SessionOptions::with_ttl(ttl)).await
    }

    fn backend_name(&self) -> &'static str {
        self.backend.capabilities().backend
    }

    /// See [`Backend::locker`]. Acquisitions, waits, holds and releases are traced and
    /// counted (see [`crate::instrument`]).
    ///
    /// Handles are cheap to clone (an `Arc`) and can be shared across tasks; two tasks
    /// locking through one handle (one session) take turns.
    pub fn locker(&self, session: &Session, name: &str) -> Result<Arc<dyn Locker>> {
        Ok(Arc::new(InstrumentedLocker {
            backend: self.backend_name(),
            inner: self.backend.locker(session, Name::new(name)?)?,
        }))
    }

    /// A [`MultiLocker`](crate::multi_lock::MultiLocker) over `names`: all or nothing,
    /// locked in a canonical order whatever order they are given in (no deadlock).
    /// Each part is an instrumented [`Coordinator::locker`].
    ///
    /// # Errors
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name,
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for no name.
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

    /// See [`Backend::election`]. Campaigns and terms are traced and counted.
    pub fn election(&self, session: &Session, name: &str) -> Result<Arc<dyn Election>> {
        Ok(Arc::new(InstrumentedElection {
            backend: self.backend_name(),
            inner: self.backend.election(session, Name::new(name)?)?,
        }))
    }

    /// See [`Backend::rwlock`]. Read and write holds are traced and counted.
    pub fn rwlock(&self, session: &Session, name: &str) -> Result<Arc<dyn RwLock>> {
        Ok(Arc::new(InstrumentedRwLock {
            backend: self.backend_name(),
            inner: self.backend.rwlock(session, Name::new(name)?)?,
        }))
    }

    /// See [`Backend::queue`]. Enqueues and dequeues are counted.
    pub fn queue(&self, name: &str) -> Result<Arc<dyn Queue>> {
        Ok(Arc::new(InstrumentedQueue {
            backend: self.backend_name(),
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
    pub fn double_barrier(
        &self,
        session: &Session,
        name: &str,
        count: usize,
    ) -> Result<Arc<dyn DoubleBarrier>> {
        Ok(Arc::new(InstrumentedDoubleBarrier {
            backend: self.backend_name(),
            inner: self
                .backend
                .double_barrier(session, Name::new(name)?, count)?,
            session: session.clone(),
            entered: std::sync::Mutex::new(None),
        }))
    }

    /// See [`Backend::semaphore`]. Acquisitions, waits and holds of permits are traced
    /// and counted.
    pub fn semaphore(
        &self,
        session: &Session,
        name: &str,
        permits: usize,
    ) -> Result<Arc<dyn crate::semaphore::Semaphore>> {
        Ok(Arc::new(InstrumentedSemaphore {
            backend: self.backend_name(),
            inner: self.backend.semaphore(session, Name::new(name)?, permits)?,
        }))
    }

    /// Who holds what under a prefix of names: see [`Backend::status`] and
    /// [`crate::status`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
    /// use distsync_core::{memory::MemoryBackend, status::LineKind, Coordinator};
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

    /// The backend's software transactional memory; run transactions with
    /// [`Stm::atomically`].
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the backend offers no STM.
    pub fn stm(&self) -> Result<Stm> {
        self.backend.stm()
    }
}
