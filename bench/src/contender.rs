//! The contract every lock+unlock cycle implementation meets (distsync, the raw store
//! commands, the peers), and the result of running one. It sits below all of them, so
//! that the cycle runner, the raw sequences and the peers import it and not each other.

use async_trait::async_trait;

use crate::stats::Samples;
use crate::Result;

/// What a cycle implementation is, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// distsync's lock (the fair one).
    Library,
    /// distsync's unfair lock ([`distsync::lock::LockOptions::unfair`]).
    Unfair,
    /// The minimal command sequence on the same client crate.
    Raw,
    /// Another lock library or program on the same store.
    Peer,
}

/// One lock implementation that can run lock+unlock cycles.
#[async_trait]
pub trait Cycler: Send {
    /// One acquire and release, uncontended.
    async fn cycle(&mut self) -> Result<()>;

    /// The last cycle's duration as the implementation timed it itself, for one that
    /// runs in another process (the Curator peer's JVM): the runner records it instead
    /// of its own clock's, which would add the round trip to that process. `None` (the
    /// default): the runner's clock.
    fn own_time(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long the last cycle waited for the lock, from asking to holding, for an
    /// implementation that can tell (see [`crate::contended`]). `None` (the default):
    /// the contended case records the whole cycle instead, and says so.
    fn last_wait(&self) -> Option<std::time::Duration> {
        None
    }

    /// How many times the store woke this implementation's waits to ask again
    /// ([`distsync::Locker::wakeups`]), for one that counts them; `None` (the default)
    /// otherwise.
    fn wakeups(&self) -> Option<u64> {
        None
    }

    /// Releases what it holds (sessions, leases, connections).
    async fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// A cycle implementation with its row in the report.
pub struct Contender {
    /// The row label.
    pub label: String,
    /// What it is.
    pub role: Role,
    /// The implementation.
    pub cycler: Box<dyn Cycler>,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("label", &self.label)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Contender {
    /// `cycler` as row `label` of `role`.
    pub fn new(label: &str, role: Role, cycler: impl Cycler + 'static) -> Self {
        let (label, cycler) = (label.to_owned(), Box::new(cycler));
        Self {
            label,
            role,
            cycler,
        }
    }
}

/// The outcome of one implementation.
#[derive(Debug)]
pub struct CycleResult {
    /// Row label.
    pub label: String,
    /// What it is.
    pub role: Role,
    /// Cycle latencies (empty if it failed before measuring).
    pub samples: Samples,
    /// The same latencies round by round (see [`crate::cycle::run`]), so that ratios between
    /// contenders can be taken round by round and their spread read as noise.
    pub rounds: Vec<Samples>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// Whether it did not run because the backend does not have it
    /// ([`distsync::Error::Unsupported`]): a gap the backend may fill later, not a
    /// failure of the run.
    pub unsupported: bool,
}

/// A contender that could not start: its label, its role and why.
pub type Unavailable = (String, Role, crate::BoxError);

/// A contender ready to run, or why it could not start.
pub type Started = std::result::Result<Contender, Unavailable>;

/// `made` as row `label` of `role`, or its error as the reason that row did not run.
pub fn started<C: Cycler + 'static>(label: &str, role: Role, made: Result<C>) -> Started {
    match made {
        Ok(cycler) => Ok(Contender::new(label, role, cycler)),
        Err(error) => Err((label.to_owned(), role, error)),
    }
}

impl CycleResult {
    /// A result for `label` with nothing measured yet.
    pub fn new(label: &str, role: Role) -> Self {
        let (label, samples, rounds) = (label.into(), Samples::new(), Vec::new());
        Self {
            label,
            role,
            samples,
            rounds,
            error: None,
            unsupported: false,
        }
    }
}

/// A result for `label`, which failed with `error` before measuring.
pub fn failure(label: &str, role: Role, error: &dyn std::fmt::Display) -> CycleResult {
    let error = Some(error.to_string());
    CycleResult {
        error,
        ..CycleResult::new(label, role)
    }
}

/// A result for `label`, which could not start with `error`: marked
/// [`unsupported`](CycleResult::unsupported) when the backend does not have it.
pub fn not_started(label: &str, role: Role, error: &crate::BoxError) -> CycleResult {
    CycleResult {
        unsupported: crate::unsupported(error.as_ref()),
        ..failure(label, role, error)
    }
}
