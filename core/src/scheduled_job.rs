//! Scheduled singleton jobs: a job that runs once per occurrence of a [`Schedule`]
//! across every replica that schedules it, built on the store's lock and STM, so it
//! works on every backend with no code of its own
//! ([`Coordinator::scheduled_job`](crate::Coordinator::scheduled_job)).
//!
//! It replaces cron plus `flock` on a fleet, and is the shape of ShedLock's
//! `@SchedulerLock(lockAtMostFor, lockAtLeastFor)` with the gaps closed: every replica
//! runs the same [`ScheduledJob::run`] loop, and each occurrence runs on one of them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use std::time::Duration;
//! use distsync::replicas::{JobOptions, Missed, Schedule};
//!
//! let coordinator = distsync::connect("memory://").await?;
//! let options = JobOptions::default()
//!     .with_at_most(Duration::from_secs(60))   // a run is stopped after a minute
//!     .with_at_least(Duration::from_millis(500)) // and no two start closer than this
//!     .with_missed(Missed::CatchUp);            // one run for what the fleet missed
//! let mut job = coordinator.scheduled_job("reports/hourly", Schedule::cron("0 * * * *")?, options)?;
//! # let mut job = coordinator.scheduled_job(
//! #     "reports/each-10ms", Schedule::every(Duration::from_millis(10))?, JobOptions::default())?;
//! let occurrence = job.next().await?; // waits for the next occurrence this replica wins
//! occurrence
//!     .while_held(async {
//!         // ... the work; fence its writes with occurrence.token() ...
//!         println!("run for {:?} with token {}", occurrence.time(), occurrence.token());
//!     })
//!     .await?;
//! occurrence.finish().await?;
//! // Or the whole loop, forever: job.run(|occurrence| async move { ... }).await
//! # Ok(()) }
//! ```
//!
//! # What it guarantees
//!
//! - **Each occurrence runs at most once**, across all replicas and across restarts of
//!   the whole fleet, and **no two runs overlap** while the holders know what they
//!   hold. A replica that stopped knowing (paused past its lease) is refused by the
//!   store and fenced by the token.
//! - **`at_least`**: no run starts sooner than this after the previous one started,
//!   even across a restart of every replica: the start is kept in the store.
//! - **`at_most`**: a run is stopped (its future dropped; on the command line CMD gets
//!   SIGTERM) once it has run this long, and the lock it holds is released; a replica
//!   that crashes mid-run blocks the job for at most its session's TTL, which is
//!   `at_most` clamped to the backend's minimum TTL and to
//!   [`DEFAULT_TTL`] (15 s, which sessions on every store may
//!   have). Unlike ShedLock's `lockAtMostFor`, a run that outlives it never overlaps
//!   the next one: it is stopped, not overtaken.
//! - **A fencing token per run**: [`Occurrence::token`], strictly greater than every
//!   earlier run's on the same store, to fence the run's writes.
//! - **Missed occurrences** (every replica was down, or a run outlasted the interval):
//!   [`Missed::Skip`] runs an occurrence only if it can start within a grace of its
//!   time (a `starting deadline`, as Kubernetes CronJobs and Quartz's misfire
//!   threshold); [`Missed::CatchUp`] runs once, at once, for all the occurrences
//!   missed since the last run recorded in the store ([`Occurrence::previous`] tells
//!   the run where the last one was). A job that has never run catches nothing up:
//!   its first run is the first occurrence that can start in time.
//!
//! # How it works
//!
//! The occurrence times are a pure function of the schedule and the local clock
//! (see [`crate::schedule`]), so the replicas agree on them without talking. For each
//! due occurrence, a replica:
//!
//! 1. reads the job's record, the STM key `<name>`[`RECORD_SUFFIX`] (the last claimed
//!    occurrence, its start, its token, the number of runs), and stops there if the
//!    occurrence is already claimed or `at_least` has not passed;
//! 2. takes the lock `<name>` on a session of its own (waiting, notified by the store,
//!    until the occurrence's grace ends under [`Missed::Skip`], or until the next
//!    occurrence under [`Missed::CatchUp`]): the lock makes runs exclusive, bounds a
//!    crashed runner's hold by the session's TTL and gives the fencing token. A grant
//!    read after that end (a replica slowed past it) is handed back unused, so that
//!    no run starts after its grace;
//! 3. claims the occurrence in one serializable STM transaction: refused if it (or a
//!    later one) is claimed or the last start is within `at_least`, else it writes the
//!    new record. The claim, not the lock, is what makes "at most once per
//!    occurrence" and `at_least` hold across restarts and for a stale holder;
//! 4. runs the job while the lock is held and `at_most` has not passed, then unlocks.
//!
//! The replicas that lose the race wait on the lock, get it when the run ends, read
//! the claim and go back to sleep: an occurrence costs each replica a lock grant and
//! two small transactions.
//!
//! # Clocks
//!
//! Each replica decides when an occurrence is due on its own clock, so the fleet's
//! clocks should agree (NTP). A replica whose clock runs ahead runs the occurrences
//! early; one that runs behind finds them claimed: skew moves runs in time, never
//! doubles them. `at_least` compares the start one replica recorded with another's
//! clock, so it is as precise as the clocks agree. A clock stepped back does not run
//! an occurrence again: the record's claim is ahead of it.
//!
//! # Keys
//!
//! The job uses the lock `<name>` (`distsync status` shows who runs it; holding it by
//! hand, `distsync lock <name>`, pauses the job) and the STM key
//! `<name>`[`RECORD_SUFFIX`], a sibling of the lock's name rather than a name under
//! it: in etcd's Go layout (`layout=go`) an STM key under `<name>/` would be a waiter
//! in the lock's line. Both move with a namespace and with
//! [`migrate`](crate::migrate) (which copies STM keys). Tokens are per store: after
//! a migration the new store's tokens start lower, and the record keeps working
//! since it never compares them.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::job_index;
use crate::layers;
use crate::name::{MAX_NAME_LEN, Name};
use crate::raw::locked;
use crate::schedule::{Schedule, from_millis, millis, millis_since_epoch};
use crate::session::{DEFAULT_TTL, Lost, Session, SessionOptions};
use crate::stm::Isolation;
use crate::token::FencingToken;

/// What the STM key of a job's record adds to the job's name: the job
/// `reports/hourly` keeps its record in `reports/hourly.distsync-scheduled-job`.
pub const RECORD_SUFFIX: &str = ".distsync-scheduled-job";

/// The version of the record's layout this client reads and writes.
const RECORD_VERSION: u32 = 1;

/// The longest a replica sleeps before it looks at the clock and the record again, so
/// that a clock stepped forward (or a record changed by hand) is seen within it.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// The longest default grace of [`Missed::Skip`].
const LONGEST_GRACE: Duration = Duration::from_secs(60);

/// What a replica does with occurrences that nobody ran in time (every replica was
/// down, or a run outlasted the interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Missed {
    /// Run an occurrence only if it starts within the grace
    /// ([`JobOptions::with_grace`]) of its time; later, skip it and wait for the next.
    /// Cron with `flock -n`, Quartz's "do nothing" misfire instruction.
    #[default]
    Skip,
    /// Run once, as soon as possible, for every occurrence missed since the last run
    /// recorded in the store; [`Occurrence::previous`] is that run's occurrence.
    /// Quartz's "fire once now" misfire instruction, anacron.
    CatchUp,
}

/// How a [`ScheduledJob`] runs: its bounds (`at_most`, `at_least`), what it does with
/// missed occurrences, and its sessions.
///
/// ```
/// use std::time::Duration;
/// use distsync::replicas::{JobOptions, Missed};
///
/// let options = JobOptions::default()
///     .with_at_most(Duration::from_secs(300))
///     .with_at_least(Duration::from_secs(30))
///     .with_missed(Missed::CatchUp);
/// assert_eq!(options.at_most(), Duration::from_secs(300));
/// assert_eq!(JobOptions::default().missed(), Missed::Skip);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobOptions {
    at_most: Duration,
    at_least: Duration,
    missed: Missed,
    grace: Option<Duration>,
    session: Option<SessionOptions>,
}

impl Default for JobOptions {
    /// `at_most` 10 minutes, no `at_least`, [`Missed::Skip`] with the default grace,
    /// sessions derived from `at_most`.
    fn default() -> Self {
        Self {
            at_most: Duration::from_secs(600),
            at_least: Duration::ZERO,
            missed: Missed::Skip,
            grace: None,
            session: None,
        }
    }
}

impl JobOptions {
    /// The same options with runs stopped after `at_most`: the hold's lease while the
    /// job runs. A run's future is dropped when it has run this long, and the lock is
    /// released. It also sets the sessions' TTL (how long a crashed runner blocks the
    /// job): `at_most`, at least the backend's minimum and at most
    /// [`DEFAULT_TTL`], unless [`Self::with_session`] says.
    #[must_use]
    pub fn with_at_most(mut self, at_most: Duration) -> Self {
        self.at_most = at_most;
        self
    }

    /// The same options with no run starting sooner than `at_least` after the previous
    /// run started (on any replica, before any restart: it is kept in the store).
    #[must_use]
    pub fn with_at_least(mut self, at_least: Duration) -> Self {
        self.at_least = at_least;
        self
    }

    /// The same options with missed occurrences handled as `missed` says.
    #[must_use]
    pub fn with_missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The same options where, under [`Missed::Skip`], an occurrence may start up to
    /// `grace` after its time. The default is half the gap to the next occurrence, at
    /// most a minute: enough for a replica woken late or a lock handed over, never so
    /// much that a stale run starts close to the next one.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The same options with every session made with `session` instead of a TTL
    /// derived from `at_most`.
    #[must_use]
    pub fn with_session(mut self, session: SessionOptions) -> Self {
        self.session = Some(session);
        self
    }

    /// How long a run may last.
    pub fn at_most(&self) -> Duration {
        self.at_most
    }

    /// The shortest time between two runs' starts.
    pub fn at_least(&self) -> Duration {
        self.at_least
    }

    /// What happens to missed occurrences.
    pub fn missed(&self) -> Missed {
        self.missed
    }

    /// The grace of [`Missed::Skip`], when set ([`Self::with_grace`]).
    pub fn grace(&self) -> Option<Duration> {
        self.grace
    }
}

/// The last run of a job as its record in the store says
/// ([`ScheduledJob::last_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastRun {
    /// The occurrence it ran for.
    pub occurrence: SystemTime,
    /// When it started, on the clock of the replica that ran it.
    pub started: SystemTime,
    /// Its fencing token.
    pub token: FencingToken,
    /// How many runs the job has had, this one included.
    pub runs: u64,
}

/// The record's text: `1 <occurrence ms> <started ms> <token> <runs>`.
fn encode(run: &LastRun) -> String {
    format!(
        "{RECORD_VERSION} {} {} {} {}",
        millis_since_epoch(run.occurrence),
        millis_since_epoch(run.started),
        run.token.get(),
        run.runs
    )
}

fn decode(backend: &'static str, key: &str, bytes: &[u8]) -> Result<LastRun> {
    let malformed = || {
        Error::InvalidArgument(format!(
            "the STM key {key:?} is not a scheduled job's record"
        ))
    };
    let text = std::str::from_utf8(bytes).map_err(|_| malformed())?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| malformed())?;
    match fields.as_slice() {
        [1, occurrence, started, token, runs] => Ok(LastRun {
            occurrence: from_millis(*occurrence),
            started: from_millis(*started),
            token: FencingToken(*token),
            runs: *runs,
        }),
        [version, ..] if *version > u64::from(RECORD_VERSION) => Err(Error::IncompatibleLayout {
            backend,
            found: u32::try_from(*version).unwrap_or(u32::MAX),
            supported: RECORD_VERSION,
        }),
        _ => Err(malformed()),
    }
}

/// What a replica does next, decided from the clock and the record (all in
/// milliseconds since the epoch).
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing is due: look again at `until`. `skipped` is an occurrence given up.
    Wait { until: u64, skipped: Option<u64> },
    /// The occurrence `target` may run: try to take the lock until `until`.
    Try { target: u64, until: u64 },
}

fn plan(
    schedule: &Schedule,
    options: &JobOptions,
    now: u64,
    record: Option<&LastRun>,
) -> Result<Plan> {
    let next = schedule
        .next_after(from_millis(now))
        .map(millis_since_epoch)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("the schedule {schedule} never occurs again"))
        })?;
    let last = record.map(|run| millis_since_epoch(run.occurrence));
    let Some(target) = schedule
        .latest_at_or_before(from_millis(now))
        .map(millis_since_epoch)
        .filter(|&target| last.is_none_or(|last| target > last))
    else {
        return Ok(Plan::Wait {
            until: next,
            skipped: None,
        });
    };
    let eligible = record.map_or(target, |run| {
        target.max(millis_since_epoch(run.started).saturating_add(millis(options.at_least)))
    });
    // Nothing is missed before a job's first run.
    let missed = if record.is_some() {
        options.missed
    } else {
        Missed::Skip
    };
    // The try ends at the grace's end under `Skip`, at the next occurrence under `CatchUp`.
    let until = match missed {
        Missed::Skip => {
            let grace = options
                .grace
                .unwrap_or_else(|| LONGEST_GRACE.min(Duration::from_millis(next - target) / 2));
            let deadline = target.saturating_add(millis(grace));
            if eligible > deadline || now > deadline {
                return Ok(Plan::Wait {
                    until: next,
                    skipped: Some(target),
                });
            }
            deadline
        }
        Missed::CatchUp => next,
    };
    Ok(if eligible > now {
        Plan::Wait {
            until: eligible,
            skipped: None,
        }
    } else {
        Plan::Try { target, until }
    })
}

fn now_millis() -> u64 {
    millis_since_epoch(SystemTime::now())
}

/// A job scheduled across replicas
/// ([`Coordinator::scheduled_job`](crate::Coordinator::scheduled_job)): call
/// [`run`](Self::run) (the loop), or [`next`](Self::next) for one occurrence at a time. See
/// the [module docs](self).
pub struct ScheduledJob {
    backend: Arc<dyn Backend>,
    name: Name,
    record_key: String,
    schedule: Schedule,
    options: JobOptions,
    session_options: SessionOptions,
    session: Option<Session>,
    /// The task listing the job in the store's index of jobs, from its first look.
    indexing: Option<job_index::Indexing>,
}

impl fmt::Debug for ScheduledJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduledJob")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A scheduled job as the store's index and its record tell
/// ([`Coordinator::scheduled_jobs`](crate::Coordinator::scheduled_jobs)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's name (its lock's).
    pub name: String,
    /// Its schedule, as the last replica to start it had it.
    pub schedule: Schedule,
    /// Its last run; `None` before the first.
    pub last_run: Option<LastRun>,
    /// The latest occurrence at or before the read: later than the last run's
    /// occurrence when an occurrence is due and not yet run (or missed).
    pub due: Option<SystemTime>,
    /// The next occurrence after the read.
    pub next: Option<SystemTime>,
}

/// The scheduled jobs whose names start with `prefix` (see
/// [`Coordinator::scheduled_jobs`](crate::Coordinator::scheduled_jobs)): the index and
/// every listed job's record, read in one transaction.
pub(crate) async fn statuses(backend: &dyn Backend, prefix: &str) -> Result<Vec<JobStatus>> {
    let name = backend.capabilities().backend;
    let prefix = prefix.to_owned();
    let read = layers::stm(backend)?
        .atomically(Isolation::SerializableSnapshot, move |tx| {
            let prefix = prefix.clone();
            async move {
                let mut jobs = Vec::new();
                for (job, schedule) in job_index::read(&tx).await? {
                    if !job.starts_with(&prefix) {
                        continue;
                    }
                    let key = format!("{job}{RECORD_SUFFIX}");
                    let record = tx.get(&key).await?;
                    jobs.push((job, schedule, key, record));
                }
                Ok(jobs)
            }
        })
        .await?;
    let now = SystemTime::now();
    read.into_iter()
        .map(|(job, schedule, key, record)| {
            Ok(JobStatus {
                last_run: record.map(|bytes| decode(name, &key, &bytes)).transpose()?,
                due: schedule.latest_at_or_before(now),
                next: schedule.next_after(now),
                name: job,
                schedule,
            })
        })
        .collect()
}

/// What a claim found.
enum Claim {
    /// Claimed; the record before.
    Won(Option<LastRun>),
    /// Refused: the record as it is.
    Refused(LastRun),
}

impl ScheduledJob {
    /// The job `name` over `backend` (see
    /// [`Coordinator::scheduled_job`](crate::Coordinator::scheduled_job)). No I/O.
    ///
    /// # Errors
    /// As [`Coordinator::scheduled_job`](crate::Coordinator::scheduled_job).
    pub(crate) fn new(
        backend: &Arc<dyn Backend>,
        name: &str,
        schedule: Schedule,
        options: JobOptions,
    ) -> Result<Self> {
        let name = Name::new(name)?;
        if name.as_str().len() + RECORD_SUFFIX.len() > MAX_NAME_LEN {
            return Err(Error::InvalidName {
                name: name.as_str().to_owned(),
                reason: "is too long for a scheduled job (its record adds 23 bytes)",
            });
        }
        let record_key = format!("{}{RECORD_SUFFIX}", name.as_str());
        Name::new(record_key.as_str())?;
        if options.at_most.is_zero() {
            return Err(Error::InvalidArgument(format!(
                "scheduled job {:?}: at_most must be more than zero",
                name.as_str()
            )));
        }
        let capabilities = backend.capabilities();
        if !capabilities.lock {
            return Err(Error::unsupported(
                capabilities.backend,
                "lock (scheduled jobs)",
            ));
        }
        if !capabilities.supports_isolation(Isolation::SerializableSnapshot) {
            return Err(Error::unsupported(
                capabilities.backend,
                "stm at SerializableSnapshot (scheduled jobs)",
            ));
        }
        let session_options = options.session.clone().unwrap_or_else(|| {
            let ttl = options.at_most.min(DEFAULT_TTL);
            SessionOptions::with_ttl(ttl.max(capabilities.min_session_ttl))
        });
        capabilities.check_session(&session_options)?;
        Ok(Self {
            backend: Arc::clone(backend),
            name,
            record_key,
            schedule,
            options,
            session_options,
            session: None,
            indexing: None,
        })
    }

    /// The job's name (its lock's).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The job's schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The job's options.
    pub fn options(&self) -> &JobOptions {
        &self.options
    }

    /// The last run recorded in the store, by any replica; `None` before the first.
    ///
    /// # Errors
    /// The store's error; [`Error::IncompatibleLayout`] for a record written by a
    /// newer distsync.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn last_run(&self) -> Result<Option<LastRun>> {
        let key = self.record_key.clone();
        let value = layers::stm(self.backend.as_ref())?
            .atomically(Isolation::SerializableSnapshot, move |tx| {
                let key = key.clone();
                async move { tx.get(&key).await }
            })
            .await?;
        value
            .map(|bytes| decode(self.backend(), &self.record_key, &bytes))
            .transpose()
    }

    fn backend(&self) -> &'static str {
        self.backend.capabilities().backend
    }

    /// Runs `work` for every occurrence this replica wins, forever: waits for the next
    /// one ([`Self::next`]), runs `work` under [`Occurrence::while_held`] (dropped
    /// when the hold is lost or `at_most` has passed, with a warning), and releases the
    /// lock ([`Occurrence::finish`]). Store outages and lost sessions are retried with
    /// backoff.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use std::time::Duration;
    /// use distsync::replicas::{JobOptions, Schedule};
    /// let coordinator = distsync::connect("memory://").await?;
    /// let mut job = coordinator.scheduled_job(
    ///     "cleanup",
    ///     Schedule::every(Duration::from_millis(20))?,
    ///     JobOptions::default(),
    /// )?;
    /// let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
    /// let looping = job.run(move |occurrence| {
    ///     let ran = ran.clone();
    ///     async move {
    ///         // ... delete what is older than occurrence.time(), fenced by occurrence.token() ...
    ///         let _ = ran.send(occurrence.token());
    ///     }
    /// });
    /// tokio::select! {
    ///     outcome = looping => outcome?,
    ///     Some(_token) = runs.recv() => {} // dropping the loop stops it
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Only what retrying cannot cure ([`Error::Unsupported`], [`Error::IncompatibleLayout`],
    /// a malformed record, a schedule that never occurs again); otherwise it never
    /// returns.
    ///
    /// # Cancel safety
    /// Dropping it drops the running `work` and releases the lock in the background
    /// (or by its session's TTL without a runtime). An occurrence claimed just before
    /// is not run again: it counts as run.
    pub async fn run<F, Fut>(&mut self, mut work: F) -> Result<()>
    where
        F: FnMut(Occurrence) -> Fut + Send,
        Fut: Future<Output = ()> + Send,
    {
        loop {
            let occurrence = self.next().await?;
            match occurrence.while_held(work(occurrence.clone())).await {
                Ok(()) => {}
                Err(Error::Timeout(at_most)) => tracing::warn!(
                    job = self.name.as_str(),
                    ?at_most,
                    token = %occurrence.token(),
                    "the run outlasted at_most and was stopped",
                ),
                Err(error) => tracing::warn!(
                    job = self.name.as_str(),
                    %error,
                    token = %occurrence.token(),
                    "the job's lock was lost while it ran; the run was stopped",
                ),
            }
            if let Err(error) = occurrence.finish().await {
                tracing::debug!(job = self.name.as_str(), %error, "releasing the job's lock");
            }
        }
    }

    /// Waits for the next occurrence this replica wins and claims it: returns with the
    /// job's lock held and the occurrence recorded in the store as run. Run the work
    /// with [`Occurrence::while_held`], then [`Occurrence::finish`].
    ///
    /// Occurrences that other replicas run, or that are refused (already claimed, too
    /// close to the previous run for `at_least`, or missed under [`Missed::Skip`]), are
    /// waited past. Store outages and lost sessions are retried with backoff (100 ms
    /// doubling to 5 s), forever: bound the call with [`crate::timeout`] if needed.
    /// The backoff starts over at each occurrence and never pauses past the next one,
    /// so an outage that ends costs the occurrences it covered and no more: a replica
    /// that failed for a while is back in time for the first occurrence after it,
    /// however long its pause had grown. The pace of the retries stays bounded: a few
    /// per occurrence, then one at each occurrence's time.
    ///
    /// # Errors
    /// As [`Self::run`].
    ///
    /// # Cancel safety
    /// Cancel-safe until the claim: a dropped call leaves no waiter behind (a lock
    /// taken is released in the background). Dropped during the claim's transaction,
    /// the occurrence may be recorded as run without running.
    pub async fn next(&mut self) -> Result<Occurrence> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // The occurrence (its time, wall ms) the failures of `backoff` were counted in.
        let mut failing_in = None;
        loop {
            match self.attempt().await {
                Ok(Some(occurrence)) => return Ok(occurrence),
                Ok(None) => backoff.reset(),
                Err(error)
                    if error.is_transient()
                        || error.needs_new_session()
                        || matches!(
                            error,
                            Error::StmConflict { .. } | Error::NotHeld | Error::Timeout(_)
                        ) =>
                {
                    tracing::warn!(job = self.name.as_str(), %error, "scheduling failed; retrying");
                    if error.needs_new_session() {
                        self.session = None;
                    }
                    let pause =
                        retry_pause(&self.schedule, now_millis(), &mut backoff, &mut failing_in);
                    tokio::time::sleep(pause).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One look at the clock and the record: waits, tries, and returns the occurrence
    /// if it won one.
    async fn attempt(&mut self) -> Result<Option<Occurrence>> {
        self.indexing.get_or_insert_with(|| {
            job_index::Indexing::start(&self.backend, &self.name, &self.schedule)
        });
        let record = self.last_run().await?;
        let now = now_millis();
        let (target, until) = match plan(&self.schedule, &self.options, now, record.as_ref())? {
            Plan::Wait { until, skipped } => {
                if let Some(skipped) = skipped {
                    tracing::info!(
                        job = self.name.as_str(),
                        occurrence = skipped,
                        "an occurrence was missed and is skipped",
                    );
                }
                sleep_until_wall(until).await;
                return Ok(None);
            }
            Plan::Try { target, until } => (target, until),
        };
        let session = self.session().await?;
        let locker = layers::locker(&self.backend, &session, self.name.clone())?;
        let wait = Duration::from_millis(until.saturating_sub(now_millis()));
        let guard = if wait.is_zero() {
            locker.try_lock().await?
        } else {
            match tokio::time::timeout(wait, locker.lock()).await {
                Ok(granted) => Some(granted?),
                Err(_elapsed) => None,
            }
        };
        let Some(guard) = guard else {
            tracing::debug!(
                job = self.name.as_str(),
                occurrence = target,
                "the lock stayed held"
            );
            return Ok(None);
        };
        let granted = Instant::now();
        let started = now_millis();
        if started > until {
            // The grant came after the try's end (a wait that the timeout did not cut
            // before its answer was read): under `Missed::Skip` the occurrence's grace is
            // over, and under `CatchUp` a later occurrence is due. Planning again decides.
            tracing::debug!(
                job = self.name.as_str(),
                occurrence = target,
                late_ms = started.saturating_sub(until),
                "granted after the try's end; handed back",
            );
            self.hand_back(guard).await;
            return Ok(None);
        }
        match self.claim(target, started, guard.token()).await? {
            Claim::Refused(run) => {
                tracing::debug!(
                    job = self.name.as_str(),
                    occurrence = target,
                    claimed = millis_since_epoch(run.occurrence),
                    "the occurrence is claimed, or at_least has not passed",
                );
                self.hand_back(guard).await;
                Ok(None)
            }
            Claim::Won(previous) => {
                tracing::info!(
                    job = self.name.as_str(),
                    occurrence = target,
                    token = %guard.token(),
                    late_ms = started.saturating_sub(target),
                    "running",
                );
                Ok(Some(Occurrence {
                    inner: Arc::new(OccurrenceInner {
                        job: self.name.as_str().to_owned(),
                        time: from_millis(target),
                        previous: previous.map(|run| run.occurrence),
                        started: from_millis(started),
                        token: guard.token(),
                        deadline: granted + self.options.at_most,
                        at_most: self.options.at_most,
                        session,
                        guard: Mutex::new(Some(guard)),
                        ended: CancellationToken::new(),
                    }),
                }))
            }
        }
    }

    /// Releases the job's lock unused; a failed release is left to the session, which
    /// ends the hold at its TTL at the latest.
    async fn hand_back(&self, guard: LockGuard) {
        if let Err(error) = guard.unlock().await {
            tracing::debug!(job = self.name.as_str(), %error, "releasing the job's lock");
        }
    }

    /// The session to lock through: the last one while it lives, else a new one.
    async fn session(&mut self) -> Result<Session> {
        if let Some(session) = self.session.as_ref().filter(|session| !session.is_lost()) {
            return Ok(session.clone());
        }
        let session = layers::session(self.backend.as_ref(), self.session_options.clone()).await?;
        self.session = Some(session.clone());
        Ok(session)
    }

    /// Claims `target` in the record, unless it (or a later occurrence) is claimed or
    /// the last run started within `at_least` of `started`.
    async fn claim(&self, target: u64, started: u64, token: FencingToken) -> Result<Claim> {
        let key = self.record_key.clone();
        let at_least = millis(self.options.at_least);
        let backend = self.backend();
        layers::stm(self.backend.as_ref())?
            .atomically(Isolation::SerializableSnapshot, move |tx| {
                let key = key.clone();
                async move {
                    let record = tx.get(&key).await?;
                    let current = record
                        .map(|bytes| decode(backend, &key, &bytes))
                        .transpose()?;
                    if let Some(run) = current {
                        let claimed = millis_since_epoch(run.occurrence);
                        let last_start = millis_since_epoch(run.started);
                        if claimed >= target || started < last_start.saturating_add(at_least) {
                            return Ok(Claim::Refused(run));
                        }
                    }
                    let run = LastRun {
                        occurrence: from_millis(target),
                        started: from_millis(started),
                        token,
                        runs: current.map_or(0, |run| run.runs).saturating_add(1),
                    };
                    tx.put(&key, encode(&run));
                    Ok(Claim::Won(current))
                }
            })
            .await
    }
}

/// The pause after an attempt failed at `now` (wall ms): `backoff`'s next, started
/// over when the due occurrence is not the one `failing_in` names (the failures were
/// counted in an earlier one), and cut short at the next occurrence's time, so that no
/// pause carries a replica past an occurrence it could run.
fn retry_pause(
    schedule: &Schedule,
    now: u64,
    backoff: &mut Backoff,
    failing_in: &mut Option<u64>,
) -> Duration {
    let due = schedule
        .latest_at_or_before(from_millis(now))
        .map(millis_since_epoch);
    if due != *failing_in {
        backoff.reset();
        *failing_in = due;
    }
    let pause = backoff.next_pause();
    schedule.next_after(from_millis(now)).map_or(pause, |next| {
        pause.min(Duration::from_millis(
            millis_since_epoch(next).saturating_sub(now).max(1),
        ))
    })
}

/// Sleeps until the wall-clock time `until` (milliseconds since the epoch), at least
/// 1 ms and at most [`LONGEST_SLEEP`].
async fn sleep_until_wall(until: u64) {
    let pause = Duration::from_millis(until.saturating_sub(now_millis()).max(1));
    tokio::time::sleep(pause.min(LONGEST_SLEEP)).await;
}

/// One occurrence this replica won and claimed ([`ScheduledJob::next`]): its time, its
/// fencing token, and the job's lock, held until [`Occurrence::finish`] (or until
/// every clone is dropped, then released in the background).
///
/// Cheap to clone (an `Arc`), so the work can own one.
#[derive(Clone)]
pub struct Occurrence {
    inner: Arc<OccurrenceInner>,
}

struct OccurrenceInner {
    job: String,
    time: SystemTime,
    previous: Option<SystemTime>,
    started: SystemTime,
    token: FencingToken,
    deadline: Instant,
    at_most: Duration,
    session: Session,
    guard: Mutex<Option<LockGuard>>,
    /// Cancelled by `finish`: the hold has ended.
    ended: CancellationToken,
}

impl fmt::Debug for Occurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Occurrence")
            .field("job", &self.inner.job)
            .field("time", &self.inner.time)
            .field("token", &self.inner.token)
            .finish_non_exhaustive()
    }
}

impl Occurrence {
    /// The job's name.
    pub fn job(&self) -> &str {
        &self.inner.job
    }

    /// The occurrence's scheduled time (what the schedule says, not when it started).
    pub fn time(&self) -> SystemTime {
        self.inner.time
    }

    /// The occurrence the previous run was for, as the record says: under
    /// [`Missed::CatchUp`], the occurrences after it up to [`Self::time`] are what
    /// this run stands for. `None` for the job's first run.
    pub fn previous(&self) -> Option<SystemTime> {
        self.inner.previous
    }

    /// When the run started, as recorded in the store.
    pub fn started(&self) -> SystemTime {
        self.inner.started
    }

    /// The run's fencing token (the job's lock's grant): strictly greater than every
    /// earlier run's on this store. Pass it to what the run writes, so that a run
    /// stopped too late is refused.
    pub fn token(&self) -> FencingToken {
        self.inner.token
    }

    /// When `at_most` ends for this run: [`Self::while_held`] stops the work then.
    pub fn deadline(&self) -> std::time::Instant {
        self.inner.deadline.into_std()
    }

    /// The session the lock is held through (for its
    /// [`health_watch`](Session::health_watch)).
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Option<LockGuard>> {
        locked(&self.inner.guard)
    }

    /// Resolves when the run must stop: the lock was lost (at the latest at its
    /// session's client-side deadline, before anyone else can take it), `at_most`
    /// has passed, or the occurrence was finished.
    ///
    /// # Cancel safety
    /// Cancel-safe; the future is `'static`.
    pub fn lost(&self) -> Lost {
        let guard_lost = self.guard().as_ref().map(LockGuard::lost);
        let ended = self.inner.ended.clone();
        let deadline = self.inner.deadline;
        Lost::from_future(async move {
            let guard_lost = async move {
                if let Some(lost) = guard_lost {
                    lost.await;
                }
            };
            tokio::select! {
                () = guard_lost => {}
                () = ended.cancelled_owned() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        })
    }

    /// Whether the run must stop, as [`Self::lost`] says.
    pub fn is_lost(&self) -> bool {
        self.inner.ended.is_cancelled()
            || Instant::now() >= self.inner.deadline
            || self.guard().as_ref().is_none_or(LockGuard::is_lost)
    }

    /// Runs `work` while the lock is held and `at_most` has not passed: returns its
    /// output, or drops it part-way and returns an error.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the lock is lost first (or already was, or the
    /// occurrence was finished); [`Error::Timeout`] (with `at_most`) when `at_most`
    /// passes first.
    ///
    /// # Cancel safety
    /// Dropping it drops `work`; whether that is safe is `work`'s business.
    pub async fn while_held<F: Future>(&self, work: F) -> Result<F::Output> {
        let deadline = self.inner.deadline;
        if Instant::now() >= deadline {
            return Err(Error::Timeout(self.inner.at_most));
        }
        let lost = {
            let guard = self.guard();
            match guard.as_ref() {
                Some(guard) if !guard.is_lost() && !self.inner.ended.is_cancelled() => guard.lost(),
                _ => return Err(Error::SessionLost),
            }
        };
        let ended = self.inner.ended.clone();
        tokio::select! {
            biased;
            () = lost => Err(Error::SessionLost),
            () = ended.cancelled_owned() => Err(Error::SessionLost),
            () = tokio::time::sleep_until(deadline) => Err(Error::Timeout(self.inner.at_most)),
            output = work => Ok(output),
        }
    }

    /// Ends the run: releases the job's lock and waits until the store has released
    /// it. Other clones see the occurrence as [`lost`](Self::lost) from then on.
    ///
    /// # Errors
    /// [`Error::SessionLost`] if the lock had been lost before (the run may not have
    /// been alone past that point; its token fences it), or the store's error.
    ///
    /// # Cancel safety
    /// Dropping it part-way does not stop the release: it goes on in the background.
    pub async fn finish(self) -> Result<()> {
        let guard = self.guard().take();
        self.inner.ended.cancel();
        match guard {
            Some(guard) => guard.unlock().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn every_10s() -> Schedule {
        Schedule::every(Duration::from_secs(10)).unwrap()
    }

    fn ran(occurrence: u64, started: u64) -> LastRun {
        LastRun {
            occurrence: from_millis(occurrence),
            started: from_millis(started),
            token: FencingToken(1),
            runs: 1,
        }
    }

    #[test]
    fn a_retry_pause_starts_over_at_each_occurrence_and_never_passes_the_next() {
        let schedule = every_10s();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        let mut failing_in = None;
        let pauses: Vec<u64> = [21_000, 21_100, 21_300, 21_700, 22_500, 24_100, 27_300]
            .into_iter()
            .map(|now| {
                let pause = retry_pause(&schedule, now, &mut backoff, &mut failing_in);
                u64::try_from(pause.as_millis()).unwrap()
            })
            .collect();
        // Doubling within the occurrence of 20 s, the last pause cut at 30 s.
        assert_eq!(pauses, [100, 200, 400, 800, 1_600, 3_200, 2_700]);
        assert_eq!(failing_in, Some(20 * S));
        // A failure in the next occurrence starts over.
        assert_eq!(
            retry_pause(&schedule, 30_050, &mut backoff, &mut failing_in),
            Duration::from_millis(100)
        );
        assert_eq!(failing_in, Some(30 * S));
    }

    #[test]
    fn records_round_trip_and_newer_ones_are_refused() {
        let run = LastRun {
            runs: 7,
            ..ran(20 * S, 20 * S + 5)
        };
        assert_eq!(decode("memory", "k", encode(&run).as_bytes()).unwrap(), run);
        assert!(matches!(
            decode("memory", "k", b"2 1 2 3 4 5 6"),
            Err(Error::IncompatibleLayout { found: 2, .. })
        ));
        assert!(matches!(
            decode("memory", "k", b"hello"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_due_occurrence_is_tried_until_its_grace_ends() {
        let options = JobOptions::default();
        // Default grace: half the interval.
        assert_eq!(
            plan(&every_10s(), &options, 21 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Try {
                target: 20 * S,
                until: 25 * S
            }
        );
        // Claimed already: wait for the next.
        assert_eq!(
            plan(&every_10s(), &options, 21 * S, Some(&ran(20 * S, 20 * S))).unwrap(),
            Plan::Wait {
                until: 30 * S,
                skipped: None
            }
        );
        // Too late: skipped.
        assert_eq!(
            plan(&every_10s(), &options, 26 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Wait {
                until: 30 * S,
                skipped: Some(20 * S)
            }
        );
    }

    #[test]
    fn catch_up_runs_late_but_not_before_the_first_run() {
        let options = JobOptions::default().with_missed(Missed::CatchUp);
        assert_eq!(
            plan(&every_10s(), &options, 59 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Try {
                target: 50 * S,
                until: 60 * S
            }
        );
        // No record: nothing was missed; only a fresh occurrence runs.
        assert_eq!(
            plan(&every_10s(), &options, 59 * S, None).unwrap(),
            Plan::Wait {
                until: 60 * S,
                skipped: Some(50 * S)
            }
        );
    }

    #[test]
    fn at_least_delays_or_skips() {
        let at_least = JobOptions::default().with_at_least(Duration::from_secs(12));
        // Last start at 10 s: eligible from 22 s, within 20 s's grace (25 s).
        assert_eq!(
            plan(&every_10s(), &at_least, 20 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Wait {
                until: 22 * S,
                skipped: None
            }
        );
        let at_least = JobOptions::default().with_at_least(Duration::from_secs(18));
        assert_eq!(
            plan(&every_10s(), &at_least, 20 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Wait {
                until: 30 * S,
                skipped: Some(20 * S)
            }
        );
        let catch_up = at_least.with_missed(Missed::CatchUp);
        assert_eq!(
            plan(&every_10s(), &catch_up, 20 * S, Some(&ran(10 * S, 10 * S))).unwrap(),
            Plan::Wait {
                until: 28 * S,
                skipped: None
            }
        );
    }
}
