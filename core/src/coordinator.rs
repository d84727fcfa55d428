//! The handle users hold: a shared backend behind the layers every handle carries.
//!
//! Every method of [`Coordinator`] is here, each a few lines: it checks its input and
//! hands the work to the module of its concept (the crate's `layers` module for the
//! primitives' handles, [`crate::lead`], [`crate::consumer`], [`crate::shards`], ...),
//! which takes the backend, never a coordinator, so that every such module sits below
//! this one.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Backend;
use crate::barrier::{Barrier, DoubleBarrier};
use crate::broken::BrokenHold;
use crate::capabilities::Capabilities;
use crate::consumer::{Consumer, ConsumerOptions};
use crate::counter::Counter;
use crate::election::{Election, Leadership};
use crate::error::{Error, Result};
use crate::group::Group;
use crate::hand_over::{Candidates, PreferenceRequest};
use crate::latch::CountDownLatch;
use crate::lead::LeadOptions;
use crate::live_session::LiveSession;
use crate::lock::Locker;
use crate::lock_options::LockOptions;
use crate::multi_lock::MultiLocker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rate_limiter::{Rate, RateLimiter};
use crate::revocation::ReleaseRequest;
use crate::rwlock::RwLock;
use crate::schedule::Schedule;
use crate::scheduled_job::{self, JobOptions, JobStatus, ScheduledJob};
use crate::semaphore::Semaphore;
use crate::session::{Session, SessionId, SessionOptions};
use crate::shards::{ShardOptions, Shards};
use crate::status::StatusReport;
use crate::stm::Stm;
use crate::{hand_over, layers, lead};

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
///   ([`MultiLocker`]), [`consumer`](Coordinator::consumer) ([`Consumer`]),
///   [`live_session`](Coordinator::live_session) ([`LiveSession`]),
///   [`stm`](Coordinator::stm) ([`Stm`]), [`session`](Coordinator::session) ([`Session`]).
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
///
/// # After the last handle is dropped
///
/// Work that must reach the store although nobody awaits it (a dropped guard's
/// release, a cancelled waiter's withdrawal, the put-back of an item whose consumer
/// went away, the deletion of a delivered item's claim) runs in tasks of its own
/// ([`CleanUp`](crate::raw::CleanUp)), which try it again through an unreachable store
/// until it lands or its bound passes. The longest bounds, up to ten minutes, are a
/// queue item's put-back and a delivered claim's deletion: without the first, the item
/// waits for the sweep of stale claims; without the second, a delivered item could be
/// put back and delivered again. Those tasks keep the store's client, and its attempts
/// to connect, alive after the last handle is gone: dropping a coordinator does not
/// stop the work that protects what was committed.
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
        layers::session(self.backend.as_ref(), options).await
    }

    /// See [`Primitives::locker`](crate::raw::Primitives::locker). Acquisitions, waits,
    /// holds and releases are traced and counted (see [`crate::instrument`]).
    ///
    /// Handles are cheap to clone (an `Arc`) and can be shared across tasks; two tasks
    /// locking through one handle (one session) take turns.
    pub fn locker(&self, session: &Session, name: &str) -> Result<Arc<dyn Locker>> {
        layers::locker(&self.backend, session, Name::new(name)?)
    }

    /// [`Coordinator::locker`] with `options`: [unfair](crate::lock_options::Fairness)
    /// ([`Primitives::unfair_locker`](crate::raw::Primitives::unfair_locker): a release
    /// goes to the first to ask, for throughput under contention), and with a
    /// [lock-delay](crate::lock_delay), a grant that follows a holder's loss (a crash, a
    /// partition, an expiry) is withheld for the delay, for resources that cannot check
    /// fencing tokens. `lock` (bounded or not) and `try_lock` both honour it.
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
        options: LockOptions,
    ) -> Result<Arc<dyn Locker>> {
        layers::locker_with(&self.backend, session, Name::new(name)?, options)
    }

    /// A [`MultiLocker`] over `names`: all or nothing,
    /// locked in a canonical order whatever order they are given in (no deadlock).
    /// Each part is an instrumented [`Coordinator::locker`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name,
    /// [`Error::InvalidArgument`] for no name.
    pub fn multi_locker(&self, session: &Session, names: &[&str]) -> Result<MultiLocker> {
        let lockers = names
            .iter()
            .map(|name| self.locker(session, name))
            .collect::<Result<Vec<_>>>()?;
        MultiLocker::new(lockers)
    }

    /// See [`Primitives::election`](crate::raw::Primitives::election). Campaigns and terms
    /// are traced and counted; where the backend offers hand-overs, candidates step back
    /// for a named successor and leaderships can
    /// [`resign_to`](crate::Leadership::resign_to) (see [`crate::hand_over`]).
    pub fn election(&self, session: &Session, name: &str) -> Result<Arc<dyn Election>> {
        layers::election(&self.backend, session, Name::new(name)?)
    }

    /// See [`Primitives::rwlock`](crate::raw::Primitives::rwlock). Read and write holds are
    /// traced and counted.
    pub fn rwlock(&self, session: &Session, name: &str) -> Result<Arc<dyn RwLock>> {
        layers::rwlock(self.backend.as_ref(), session, Name::new(name)?)
    }

    /// See [`Primitives::queue`](crate::raw::Primitives::queue). Enqueues and dequeues are counted.
    pub fn queue(&self, name: &str) -> Result<Arc<dyn Queue>> {
        layers::queue(self.backend.as_ref(), Name::new(name)?)
    }

    /// See [`Primitives::barrier`](crate::raw::Primitives::barrier). Waits are traced and counted.
    pub fn barrier(&self, name: &str) -> Result<Arc<dyn Barrier>> {
        layers::barrier(self.backend.as_ref(), Name::new(name)?)
    }

    /// See [`Primitives::double_barrier`](crate::raw::Primitives::double_barrier). Entries,
    /// waits and participations are traced and counted.
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
        layers::double_barrier(self.backend.as_ref(), session, name, count)
    }

    /// See [`Primitives::semaphore`](crate::raw::Primitives::semaphore). Acquisitions,
    /// waits and holds of permits are traced and counted.
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
    ) -> Result<Arc<dyn Semaphore>> {
        let name = Name::new(name)?;
        let permits = non_zero(permits, || {
            format!("semaphore {:?}: permits must be at least 1", name.as_str())
        })?;
        layers::semaphore(self.backend.as_ref(), session, name, permits)
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
        self.backend.status_with_time_left(prefix).await
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
    /// [`crate::Error::InvalidName`] for a bad name; [`crate::Error::Unsupported`] where
    /// the backend has no latch.
    pub fn latch(&self, name: &str, count: u64) -> Result<Arc<dyn CountDownLatch>> {
        Ok(Arc::from(self.backend().latch(Name::new(name)?, count)?))
    }

    /// The rate limiter `name` at `rate` (see
    /// [`Primitives::rate_limiter`](crate::raw::Primitives::rate_limiter) and
    /// [`crate::rate_limiter`]).
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
        layers::stm(self.backend.as_ref())
    }

    /// A [`LiveSession`] that opens sessions with `options`: the first at its first
    /// [`current`](LiveSession::current), then a new one after each loss.
    ///
    /// The options are checked here, with no I/O, as
    /// [`Coordinator::session_with`] checks them, so that a bad option is reported
    /// once instead of at every call.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TTL below the backend's
    /// [`Capabilities::min_session_ttl`](crate::Capabilities::min_session_ttl) or a
    /// margin that leaves no room for a renewal.
    pub fn live_session(&self, options: SessionOptions) -> Result<LiveSession> {
        self.capabilities().check_session(&options)?;
        Ok(LiveSession::new(Arc::clone(&self.backend), options))
    }

    /// Runs `work` while this process leads the election `name` with `value`, and
    /// keeps campaigning, with the default [`LeadOptions`], until `work` returns; see
    /// [`Coordinator::lead_with`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// coordinator
    ///     .lead("scheduler", "node-1", |leadership| async move {
    ///         // Runs only while leader; pass the term to what it writes.
    ///         println!("leading in term {}", leadership.term());
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Coordinator::lead_with`].
    ///
    /// # Cancel safety
    /// As [`Coordinator::lead_with`].
    pub async fn lead<F, Fut>(
        &self,
        name: &str,
        value: impl Into<Bytes> + Send,
        work: F,
    ) -> Result<()>
    where
        F: FnMut(Arc<Leadership>) -> Fut + Send,
        Fut: Future<Output = Result<()>> + Send,
    {
        self.lead_with(name, value, &LeadOptions::default(), work)
            .await
    }

    /// Runs `work` while this process leads the election `name` with `value`: opens a
    /// session, campaigns, and on every win calls `work` with the leadership (its
    /// [`Leadership::term`] is the fencing token to pass to what the work writes).
    ///
    /// - When the leadership or its session is lost (the store ended it, a partition
    ///   outlasted the session's client-side deadline), the work's future is dropped
    ///   at once (before anyone else can be elected, by the session's deadline), and
    ///   `lead` campaigns again on a fresh session.
    /// - While the store cannot be reached, or sessions cannot be opened, it retries
    ///   with backoff ([`LeadOptions::with_retry`]), forever: bound it with
    ///   `tokio::time::timeout` or stop it by dropping it.
    /// - When `work` returns, `lead` resigns, closes its session and returns what
    ///   `work` returned. A `work` that should run forever never returns.
    ///
    /// Two processes calling `lead` on one name never run their work at once (the
    /// election's guarantee), and a loss is logged (`tracing`, warn).
    ///
    /// # Errors
    /// What `work` returned, or an error campaigning cannot recover from
    /// ([`Error::InvalidName`], [`Error::Unsupported`], ...); lost sessions and
    /// unreachable stores are retried instead.
    ///
    /// # Cancel safety
    /// Dropping the future drops the work and the leadership, which resigns in the
    /// background (or ends with its session's TTL if no runtime is left).
    pub async fn lead_with<F, Fut>(
        &self,
        name: &str,
        value: impl Into<Bytes> + Send,
        options: &LeadOptions,
        work: F,
    ) -> Result<()>
    where
        F: FnMut(Arc<Leadership>) -> Fut + Send,
        Fut: Future<Output = Result<()>> + Send,
    {
        lead::lead(&self.backend, name, value.into(), options, work).await
    }

    /// A [`Consumer`] of the queue `name`: a handler run on each item with retries, a
    /// processing deadline and a dead-letter queue (see the [module
    /// docs](crate::consumer)).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad queue or dead-letter queue name,
    /// [`Error::InvalidArgument`] for `max_deliveries` of 0, a zero processing
    /// deadline or a dead-letter queue that is the consumed queue; before any I/O.
    pub fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Consumer> {
        Consumer::new(&self.backend, name, options)
    }

    /// The group `name` (see [`crate::group`]). No I/O.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name; [`Error::Unsupported`] on a store that
    /// cannot scan its names (the member list is a [`status`](Coordinator::status)
    /// read of the group's prefix): one without
    /// [`Capabilities::export`](crate::Capabilities::export).
    pub fn group(&self, name: &str) -> Result<Group> {
        Group::new(&self.backend, name)
    }

    /// Takes part in the sharded group `group` as `member`: `count` shards spread over
    /// the group's live members (see [`crate::shards`]). Starts the member's loop in
    /// the background and returns at once; [`Shards::changes`] reports the shards this
    /// member owns as they change.
    ///
    /// Every member of a group must use the same `count` (it is the shard space, not a
    /// per-member setting).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use distsync::replicas::ShardOptions;
    /// let coordinator = distsync::connect("memory://").await?;
    /// let shards = coordinator.shards("indexers", "host-a", 16, ShardOptions::default())?;
    /// let mut changes = shards.changes();
    /// // Alone in the group, this member comes to own all 16.
    /// changes.wait_for(|owned| owned.len() == 16).await.expect("running");
    /// let written = shards
    ///     .while_owned(3, |token| async move { /* write with `token` */ token.get() })
    ///     .await?
    ///     .done(); // `None` had the shard moved away during the work
    /// assert!(written.is_some_and(|token| token > 0));
    /// shards.stop().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad group name or a member id that is not one name
    /// segment; [`Error::InvalidArgument`] for a `count` of 0 or above
    /// [`MAX_SHARDS`](crate::shards::MAX_SHARDS); [`Error::Unsupported`] where the store
    /// cannot list a group (see [`Coordinator::group`]). Store errors do not end the loop:
    /// they are logged and retried.
    ///
    /// # Panics
    /// Outside a tokio runtime (the loop is a task).
    pub fn shards(
        &self,
        group: &str,
        member: &str,
        count: u32,
        options: ShardOptions,
    ) -> Result<Shards> {
        Shards::start(&self.backend, group, member, count, options)
    }

    /// The job `name`, run once per occurrence of `schedule` across every replica that
    /// schedules it with this name; see [`crate::scheduled_job`]. No I/O: call
    /// [`ScheduledJob::run`] (or [`ScheduledJob::next`]) to take part.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use std::time::Duration;
    /// use distsync::replicas::{JobOptions, Schedule};
    /// let coordinator = distsync::connect("memory://").await?;
    /// let job = coordinator.scheduled_job(
    ///     "billing/invoices",
    ///     Schedule::cron("0 3 * * *")?, // 03:00 UTC daily
    ///     JobOptions::default().with_at_most(Duration::from_secs(1800)),
    /// )?;
    /// assert_eq!(job.last_run().await?, None);
    /// # Ok(()) }
    /// ```
    ///
    /// Every replica should pass the same schedule and options: each decides with its
    /// own (a replica with a shorter `at_least` runs sooner than the others would).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name or one longer than 255 bytes less
    /// [`RECORD_SUFFIX`](crate::scheduled_job::RECORD_SUFFIX); [`Error::InvalidArgument`]
    /// for a zero `at_most` or session options the backend refuses; [`Error::Unsupported`]
    /// where the backend has no lock or no serializable STM.
    pub fn scheduled_job(
        &self,
        name: &str,
        schedule: Schedule,
        options: JobOptions,
    ) -> Result<ScheduledJob> {
        ScheduledJob::new(&self.backend, name, schedule, options)
    }

    /// The scheduled jobs whose names start with `prefix`, each with its schedule, its
    /// last run and its due and next occurrences, for operators: every job that has
    /// looked for an occurrence on this store is listed, whether it runs or not (see
    /// [`JobStatus`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend has no serializable STM; the store's
    /// error; [`Error::IncompatibleLayout`] for a record written by a newer distsync.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn scheduled_jobs(&self, prefix: &str) -> Result<Vec<JobStatus>> {
        scheduled_job::statuses(self.backend.as_ref(), prefix).await
    }

    /// The candidates of the election `name`: the leader with its term, then the
    /// others in the order they are to lead, each with the session id that names it in
    /// [`Leadership::resign_to`](crate::Leadership::resign_to). A snapshot as far as the
    /// store's status report is one (see [`crate::status`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::Unsupported`] on a backend without
    /// [`Capabilities::hand_over`](crate::Capabilities::hand_over); the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn candidates(&self, name: &str) -> Result<Candidates> {
        hand_over::candidates(&self.backend, &Name::new(name)?).await
    }

    /// Asks the current leader of the election `name` to hand over to the candidate
    /// campaigning through the session `candidate` (which must be waiting in line): the
    /// leader sees it through
    /// [`Leadership::preference_requested`](crate::Leadership::preference_requested) and
    /// decides. A candidate asks for itself with its own session's id; an operator asks
    /// for any candidate [`Coordinator::candidates`] lists (the console's "hand over").
    /// Returns the request made, or `None` when the election has no leader (nothing is
    /// recorded). A request is for the leader of the moment only; see
    /// [`crate::hand_over`].
    ///
    /// ```
    /// # async fn demo(coordinator: distsync::Coordinator, session: distsync::Session)
    /// # -> distsync::Result<()> {
    /// let election = coordinator.election(&session, "scheduler")?;
    /// let campaign = election.campaign("node-2");
    /// // While the campaign waits in line (in a task or a `select!`):
    /// coordinator.prefer("scheduler", session.id()).await?;
    /// # drop(campaign);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::InvalidArgument`] when `candidate` has no
    /// candidacy waiting in the election; [`Error::Unsupported`] on a backend without
    /// [`Capabilities::hand_over`](crate::Capabilities::hand_over); the store's error.
    ///
    /// # Cancel safety
    /// Dropped part-way, the request was made or it was not; repeating it is harmless.
    pub async fn prefer(
        &self,
        name: &str,
        candidate: SessionId,
    ) -> Result<Option<PreferenceRequest>> {
        hand_over::prefer(&self.backend, &Name::new(name)?, candidate).await
    }

    /// Breaks the lock `name`: ends its holder's session in the store, as an operator
    /// would, and returns who held it and since when; `None` when nobody holds it.
    ///
    /// The break is safe for the resource the lock protects, and ends **every** hold
    /// of the holder's session, not this lock's alone (on ZooKeeper, the hold alone):
    /// see [`crate::broken`]. Waiters keep their places: the first of them is granted.
    ///
    /// ```
    /// # async fn demo(coordinator: distsync::Coordinator) -> distsync::Result<()> {
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

    /// Asks the holder of the lock `name` to release it: cooperative revocation, the polite
    /// form of [`Coordinator::break_lock`]. Returns the hold asked, or `None` when nobody
    /// holds the lock (then nothing is recorded and no later holder is asked). The holder
    /// learns of it through
    /// [`LockGuard::release_requested`](crate::LockGuard::release_requested) and decides
    /// when to unlock; see [`crate::revocation`] for the semantics and how soon it is seen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
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

/// `value` as a [`NonZeroUsize`], or [`Error::InvalidArgument`] with the message `what`
/// gives: the one place a user's count or permit number is checked, so that no
/// backend needs to.
fn non_zero(value: usize, what: impl FnOnce() -> String) -> Result<NonZeroUsize> {
    NonZeroUsize::new(value).ok_or_else(|| Error::InvalidArgument(what()))
}
