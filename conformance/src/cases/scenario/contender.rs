//! What the crash and pause cases contend for: a lock, or a permit of a semaphore whose
//! other permits are taken, so that in both an external holder's hold is the one thing
//! a waiter waits for, and the grant ([`Granted`]) has a fencing token.

use distsync_core::{FencingToken, LockGuard, Locker, Permit, Result, Semaphore, Session};

use crate::faults::{HoldKind, HOLDER_PERMITS};
use crate::harness::Harness;

/// A lock or a semaphore permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A lock named `mutex`.
    Lock,
    /// An unfair lock named `mutex`.
    UnfairLock,
    /// A permit of a semaphore of [`HOLDER_PERMITS`] permits named `semaphore`.
    Permit,
}

impl Target {
    /// What an external holder of this target holds.
    pub(crate) fn hold_kind(self) -> HoldKind {
        match self {
            Self::Lock => HoldKind::Lock,
            Self::UnfairLock => HoldKind::UnfairLock,
            Self::Permit => HoldKind::Permit,
        }
    }

    /// The name suffix (see [`Harness::name`]).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Lock | Self::UnfairLock => "mutex",
            Self::Permit => "semaphore",
        }
    }

    /// What is contended for, in a few words.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Lock => "the lock",
            Self::UnfairLock => "the unfair lock",
            Self::Permit => "the last free permit",
        }
    }
}

/// A client of the target through one session.
pub(crate) enum Contender {
    /// A locker.
    Lock(Box<dyn Locker>),
    /// A semaphore, with the permits taken (each through a session of its own: a
    /// session has one entry per semaphore) to leave only the external holder's
    /// permit to wait for.
    Permit {
        semaphore: Box<dyn Semaphore>,
        _fillers: Vec<(Session, Box<dyn Semaphore>, Permit)>,
    },
}

impl Contender {
    /// A contender for `target` through `session`. With `fill`, a permit contender
    /// first takes every permit but one (the external holder's), each through a
    /// session of its own, so that an `acquire` waits exactly for the external
    /// holder.
    pub(crate) async fn new(
        h: &Harness,
        session: &Session,
        target: Target,
        fill: bool,
    ) -> Result<Self> {
        let name = h.name(target.suffix())?;
        Ok(match target {
            Target::Lock => Self::Lock(h.backend().locker(session, name)?),
            Target::UnfairLock => Self::Lock(h.backend().unfair_locker(session, name)?),
            Target::Permit => {
                let mut fillers = Vec::new();
                if fill {
                    for _ in 1..HOLDER_PERMITS.get() {
                        let session = h.session().await?;
                        let semaphore =
                            h.backend()
                                .semaphore(&session, name.clone(), HOLDER_PERMITS)?;
                        let permit = semaphore.acquire().await?;
                        fillers.push((session, semaphore, permit));
                    }
                }
                let semaphore = h.backend().semaphore(session, name, HOLDER_PERMITS)?;
                Self::Permit {
                    semaphore,
                    _fillers: fillers,
                }
            }
        })
    }

    /// Waits for the target.
    ///
    /// Cancel-safety: as `Locker::lock` / `Semaphore::acquire`.
    pub(crate) async fn acquire(&self) -> Result<Granted> {
        match self {
            Self::Lock(locker) => locker.lock().await.map(Granted::Lock),
            Self::Permit { semaphore, .. } => semaphore.acquire().await.map(Granted::Permit),
        }
    }

    /// Takes the target if it is free.
    ///
    /// Cancel-safety: as `Locker::try_lock` / `Semaphore::try_acquire`.
    pub(crate) async fn try_acquire(&self) -> Result<Option<Granted>> {
        match self {
            Self::Lock(locker) => Ok(locker.try_lock().await?.map(Granted::Lock)),
            Self::Permit { semaphore, .. } => {
                Ok(semaphore.try_acquire().await?.map(Granted::Permit))
            }
        }
    }
}

/// What a [`Contender`] was granted: a lock's guard or a permit.
pub(crate) enum Granted {
    /// A lock's guard.
    Lock(LockGuard),
    /// A semaphore's permit.
    Permit(Permit),
}

impl Granted {
    /// The grant's fencing token.
    pub(crate) fn token(&self) -> FencingToken {
        match self {
            Self::Lock(guard) => guard.token(),
            Self::Permit(permit) => permit.token(),
        }
    }

    /// Whether the hold is lost.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            Self::Lock(guard) => guard.is_lost(),
            Self::Permit(permit) => permit.is_lost(),
        }
    }

    /// Releases the hold.
    ///
    /// Cancel-safety: as `LockGuard::unlock` / `Permit::release`.
    pub(crate) async fn release(self) -> Result<()> {
        match self {
            Self::Lock(guard) => guard.unlock().await,
            Self::Permit(permit) => permit.release().await,
        }
    }
}
