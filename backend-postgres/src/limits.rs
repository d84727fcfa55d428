//! The bounds that keep the backend's tables and caches from growing without end
//! ([`Limits`], whose docs say what each bounds).

use std::time::Duration;

/// Bounds on the backend's tables and caches, kept by the sweep.
///
/// A process that uses millions of distinct lock names, or a leader that proclaims
/// for months, must not grow the store or its own memory without bound:
/// - **names** (`lock_names`, with each name's fencing counter): a name unused for
///   [`Limits::name_idle`] with no entry in line is deleted by the sweep (at most
///   [`Limits::names_per_sweep`] a sweep, repeated while there are more). Its counter
///   is folded into the schema's *token floor* first, and a name registered again
///   starts at that floor, so no name's fencing tokens ever go backwards;
/// - **the election log**: trimmed to the last [`Limits::election_log_keep`] entries
///   of an election at every win and every 16th proclaim, and entries older than
///   [`Limits::election_log_age`] are deleted by the sweep (an observer further behind
///   skips entries but stays in order);
/// - **the in-process name cache** (name → id): at most [`Limits::name_cache`] entries;
///   half are dropped when it is full (a dropped name is looked up again on next use);
/// - the sweep itself runs at most every [`Limits::sweep_every`] per backend, from the
///   sessions' keepalives, on the reaper connections.
///
/// `Limits::default()` suits production; tests shrink them to show the bounds. Set
/// them with [`PostgresBackend::set_limits`](crate::PostgresBackend::set_limits).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most names kept in the in-process name cache.
    pub name_cache: usize,
    /// How long a name stays unused (no grant, no entry in line) before it is pruned
    /// (the last grant's time is kept to the second, so a name may go up to a second
    /// earlier; one used again after that is registered anew, its tokens still above
    /// every token handed out before).
    pub name_idle: Duration,
    /// The most names pruned by one statement of a sweep.
    pub names_per_sweep: u32,
    /// The entries kept in one election's log.
    pub election_log_keep: u32,
    /// The age after which election log entries are deleted by the sweep.
    pub election_log_age: Duration,
    /// How often one backend sweeps (expired sessions, unused names, old log entries).
    pub sweep_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            name_cache: 100_000,
            name_idle: Duration::from_secs(300),
            names_per_sweep: 10_000,
            election_log_keep: 1_000,
            election_log_age: Duration::from_secs(600),
            sweep_every: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// `election_log_keep` as the `integer` the schema's functions take.
    pub(crate) fn log_keep_sql(&self) -> i32 {
        i32::try_from(self.election_log_keep.max(1)).unwrap_or(i32::MAX)
    }

    /// `names_per_sweep` as an `integer`.
    pub(crate) fn names_per_sweep_sql(&self) -> i32 {
        i32::try_from(self.names_per_sweep.max(1)).unwrap_or(i32::MAX)
    }
}
