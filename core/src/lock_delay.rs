//! Lock-delay: after a holder lost a lock without releasing it (a crash, a partition,
//! a session that expired), the next grant is withheld for a set delay.
//!
//! # When to use it
//!
//! Fencing tokens ([`crate::LockGuard::token`]) are the real protection against a
//! holder that lost its lock without knowing: the resource refuses writes with a token
//! lower than the highest it has seen. Some resources cannot check a token (a file on
//! a plain disk, a third-party API, a device). For those, lock-delay (Chubby's name
//! for it) narrows the window instead of closing it: a holder that lost its session
//! has `delay` more time to notice (its [`lost()`](crate::LockGuard::lost) fires at
//! its client-side deadline) and stop its writes before the next holder starts.
//! A holder paused for longer than the delay after its loss (a stop-the-world GC, a
//! SIGSTOP, swap) still overlaps with the next holder: only fencing tokens catch that.
//! See `docs/FENCING.md`, "Lock-delay: for resources that cannot check tokens".
//!
//! # How it works
//!
//! Built once, here, on every backend that offers a lock and a
//! [`Counter`]: each lock name has a record, the counter
//! `<lock name>/`[`RECORD_SEGMENT`], whose value is even while the lock was last
//! released cleanly and odd while it is held (or was lost while held).
//!
//! - **At a grant** the store has already granted the lock (everyone else is
//!   excluded) and the wrapper reads the record `v`. If `v` is odd, the previous
//!   holder did not release cleanly: the wrapper keeps the grant but does not return
//!   it until `delay` has passed since the grant (the old holder's session ended
//!   before this grant, so `delay` after the grant is at least `delay` after the
//!   loss), then moves the record `v → v + 2` (still odd: a new hold). If `v` is
//!   even it moves `v → v + 1`. Both moves are compare-and-set.
//! - **At a clean release** (an `unlock()` or a drop while the hold is not known to be
//!   lost), the record is moved from the holder's own value `v` to `v + 1` (even)
//!   *before* the store releases the lock. A holder whose value a later holder
//!   already moved on cannot clear it: its compare-and-set fails.
//! - **A failed compare-and-set at a grant** means someone else wrote the record while
//!   this grant holds the lock. The only writer that can is a previous holder clearing
//!   its own value late: one that believed its release clean (not known lost) but
//!   whose lock the store had already handed on, so its write lands during this
//!   grant's delay. The wrapper reads the record again and starts over (the delay, if
//!   already waited once, is not waited again); each previous holder can write at
//!   most once, so a few attempts suffice, and a record that keeps moving is reported
//!   as an error (with the grant released) rather than guessed at.
//!
//! The record is written only by lockers with a lock-delay: give every locker of a
//! name the same option (a locker without it neither waits nor clears the record, so
//! after its clean release the next delayed grant waits once more than needed; after
//! a delayed holder's crash, a locker without it does not wait).
//!
//! # Waiting calls and the delay
//!
//! - [`Locker::lock`] returns once the delay, if any, has passed.
//! - Under [`crate::timeout`], the delay counts inside the timeout: when the delay
//!   would end after the deadline, the grant is kept until the deadline, then
//!   released (in the background, as a dropped guard is) and the call returns
//!   [`Error::Timeout`]. It leaves
//!   no residue: the record still says "lost while held", so the next grant waits a
//!   full delay too.
//! - [`Locker::try_lock`] does not wait for a holder, but when it is granted a lock
//!   whose previous holder did not release cleanly it waits out the delay before
//!   returning the guard (answering `None` instead would leave the lock free for the
//!   delay and let a `try_lock` loop starve forever, since the delay starts at a
//!   grant).
//! - Dropping a call during the delay releases the grant (in the background, as
//!   dropping a guard does) and leaves the record as it was.
//! - The hold's `lost()` during the delay ends the wait with [`Error::SessionLost`].
//!
//! A zero delay is the plain locker: no record is read or written.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use std::time::Duration;
//! use distsync::lock::LockOptions;
//! let coordinator = distsync::connect("memory://").await?;
//! let session = coordinator.session().await?;
//! let options = LockOptions::new().lock_delay(Duration::from_secs(5));
//! let printer = coordinator.locker_with(&session, "devices/printer", options)?;
//! // Released cleanly before (or never held): granted at once.
//! let guard = printer.lock().await?;
//! // ... drive the device, which cannot check guard.token() ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::counter::{Counter, checked_add};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::lock::Locker;
use crate::lock_options::LockOptions;
use crate::name::Name;
use crate::session::Session;

/// The last segment of the counters that record, per lock name, whether the lock was
/// last released cleanly: the lock `jobs/nightly` has the record
/// `jobs/nightly/.distsync-lock-delay`. Under the lock's own name, so that whatever
/// removes or lists a prefix of names (a namespace's clean-up, `status`) finds it with
/// the lock. Reserved: [`Coordinator::counter`](crate::Coordinator::counter) refuses
/// names that end with it, so a user's counter never meets a record.
pub const RECORD_SEGMENT: &str = ".distsync-lock-delay";

/// How many times a grant re-reads a record that moved under it before giving up.
const ATTEMPTS: usize = 8;

/// Whether `name` is a record's (see [`RECORD_SEGMENT`]).
pub(crate) fn is_reserved(name: &str) -> bool {
    crate::name::ends_in_segment(name, RECORD_SEGMENT)
}

/// The record's name for the lock `lock`.
///
/// # Errors
/// [`Error::InvalidName`] when the lock's name is too long to leave room for the
/// prefix.
pub(crate) fn record_name(lock: &Name) -> Result<Name> {
    lock.child(
        RECORD_SEGMENT,
        "is too long for a lock-delay (at most 234 bytes: its record needs 21 more)",
    )
}

/// The lock `name` of `backend`, held through `session`, with `options`: what
/// [`Coordinator::locker_with`](crate::Coordinator::locker_with) gives, without its
/// metrics layer, for code that holds a backend rather than a coordinator (a
/// backend's own tests, a holder in a conformance case).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
/// use std::time::Duration;
/// use distsync_core::lock_delay;
/// use distsync_core::LockOptions;
/// use distsync_core::{Backend, Name};
/// let backend = distsync_kv::memory::MemoryBackend::new();
/// let session = backend.session(Default::default()).await?;
/// let options = LockOptions::new().lock_delay(Duration::from_secs(5));
/// let locker = lock_delay::locker(&backend, &session, Name::new("devices/printer")?, options)?;
/// locker.lock().await?.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Coordinator::locker_with`](crate::Coordinator::locker_with).
pub fn locker(
    backend: &dyn Backend,
    session: &Session,
    name: Name,
    options: LockOptions,
) -> Result<Arc<dyn Locker>> {
    let inner = options.store_locker(backend, session, name)?;
    wrap(Arc::from(inner), backend, options)
}

/// `inner` with `options`' lock-delay (a zero delay gives `inner` back), its record
/// kept in `backend`'s counter [`record_name`].
pub(crate) fn wrap(
    inner: Arc<dyn Locker>,
    backend: &dyn Backend,
    options: LockOptions,
) -> Result<Arc<dyn Locker>> {
    if options.delay().is_zero() {
        return Ok(inner);
    }
    let record = Arc::from(backend.counter(record_name(inner.name())?)?);
    Ok(Arc::new(LockDelayLocker {
        inner,
        record,
        delay: options.delay(),
        backend: backend.capabilities().backend,
    }))
}

/// A locker whose grants honour a lock-delay (see [the module docs](self)).
struct LockDelayLocker {
    inner: Arc<dyn Locker>,
    record: Arc<dyn Counter>,
    delay: Duration,
    backend: &'static str,
}

impl fmt::Debug for LockDelayLocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockDelayLocker")
            .field("name", self.inner.name())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// A timed call's deadline and its whole timeout (for the error).
type Deadline = Option<(Instant, Duration)>;

impl LockDelayLocker {
    /// Records the grant `guard` (waiting out the delay when the previous holder did
    /// not release cleanly) and returns it, ready to clear the record on a clean
    /// release; releases it again on any failure.
    async fn settle(&self, guard: LockGuard, deadline: Deadline) -> Result<LockGuard> {
        let granted = Instant::now();
        match self.record_grant(&guard, granted, deadline).await {
            Ok(mine) => Ok(self.clear_on_clean_release(guard, mine)),
            Err(error) => {
                if let Err(release) = guard.unlock().await {
                    tracing::debug!(lock = %self.inner.name(), error = %release,
                        "releasing a lock-delay grant that failed; the lease frees it");
                }
                Err(error)
            }
        }
    }

    /// Moves the record to this grant's (odd) value and returns it.
    async fn record_grant(
        &self,
        guard: &LockGuard,
        granted: Instant,
        deadline: Deadline,
    ) -> Result<i64> {
        let mut delayed = false;
        for _ in 0..ATTEMPTS {
            let value = self.record.get().await?;
            let held = value.rem_euclid(2) == 1;
            if held && !delayed {
                self.wait_delay(guard, granted, deadline).await?;
                delayed = true;
            }
            let mine = checked_add(self.record.name(), value, if held { 2 } else { 1 })?;
            if self.record.compare_and_set(value, mine).await? {
                return Ok(mine);
            }
        }
        Err(Error::backend(
            self.backend,
            format!(
                "lock {:?}: its lock-delay record changed {ATTEMPTS} times while this grant \
                 held the lock (something other than its lockers writes it)",
                self.inner.name().as_str()
            ),
        ))
    }

    /// Waits until `delay` after `granted`, or fails: the hold lost first
    /// ([`Error::SessionLost`]), or a timed call's deadline before the delay's end
    /// ([`Error::Timeout`], at the deadline).
    async fn wait_delay(
        &self,
        guard: &LockGuard,
        granted: Instant,
        deadline: Deadline,
    ) -> Result<()> {
        let until = granted + self.delay;
        tracing::info!(
            lock = %self.inner.name(),
            delay_ms = crate::schedule::millis(self.delay),
            "lock-delay: the previous holder lost the lock without releasing it; \
             withholding the grant"
        );
        let (wake, outcome) = match deadline {
            Some((deadline, timeout)) if deadline < until => {
                (deadline, Err(Error::Timeout(timeout)))
            }
            _ => (until, Ok(())),
        };
        tokio::select! {
            biased;
            () = guard.lost() => Err(Error::SessionLost),
            () = tokio::time::sleep_until(wake) => outcome,
        }
    }

    /// `guard`, set to move the record from `mine` to `mine + 1` (released cleanly)
    /// before the store releases it, when it is released while not known lost.
    fn clear_on_clean_release(&self, guard: LockGuard, mine: i64) -> LockGuard {
        let record = Arc::clone(&self.record);
        let Some(clean) = mine.checked_add(1) else {
            return guard;
        };
        guard.before_clean_release(Box::new(move || {
            async move {
                match record.compare_and_set(mine, clean).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(
                        record = %record.name(),
                        "a later holder owns the lock-delay record; it stays as it is"
                    ),
                    Err(error) => tracing::debug!(
                        record = %record.name(), %error,
                        "recording a clean release failed; the next grant waits the lock-delay"
                    ),
                }
            }
            .boxed()
        }))
    }
}

#[async_trait]
impl Locker for LockDelayLocker {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn lock(&self) -> Result<LockGuard> {
        let guard = self.inner.lock().await?;
        self.settle(guard, None).await
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        match self.inner.try_lock().await? {
            Some(guard) => self.settle(guard, None).await.map(Some),
            None => Ok(None),
        }
    }

    async fn contenders(&self) -> Result<usize> {
        self.inner.contenders().await
    }

    fn wakeups(&self) -> u64 {
        self.inner.wakeups()
    }
}
