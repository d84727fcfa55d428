//! The contract every lock+unlock cycle implementation meets (distsync, the raw store
//! commands, the peers), and the result of running one. It sits below all of them, so
//! that the cycle runner, the raw sequences and the peers import it and not each other.

use async_trait::async_trait;

use crate::stats::Samples;
use crate::Result;

/// What a cycle implementation is, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// distsync itself.
    Library,
    /// The minimal command sequence on the same client crate.
    Raw,
    /// The raw sequence plus one step distsync takes, to show where its overhead goes.
    Diagnostic,
    /// Another lock library or program on the same store.
    Peer,
    /// Not a lock: a reference figure (e.g. spawning a process).
    Baseline,
}

/// One lock implementation that can run lock+unlock cycles.
#[async_trait]
pub trait Cycler: Send {
    /// The row label.
    fn label(&self) -> String;

    /// What it is.
    fn role(&self) -> Role;

    /// How many measured cycles it gets when others get `cycles` (process-spawning
    /// implementations take far longer per cycle and do fewer).
    fn cycles(&self, cycles: usize) -> usize {
        cycles
    }

    /// One acquire and release, uncontended.
    async fn cycle(&mut self) -> Result<()>;

    /// Releases what it holds (sessions, leases, connections).
    async fn close(self: Box<Self>) -> Result<()> {
        Ok(())
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
}

/// A contender that could not start.
pub type Unavailable = (String, Role, crate::BoxError);

/// A result for `label`, which failed with `error` before measuring.
pub fn failure(label: &str, role: Role, error: &dyn std::fmt::Display) -> CycleResult {
    CycleResult {
        label: label.into(),
        role,
        samples: Samples::new(),
        rounds: Vec::new(),
        error: Some(error.to_string()),
    }
}
