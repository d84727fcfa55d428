//! Who holds what: a read-only view of the live state of a store
//! ([`Coordinator::status`](crate::Coordinator::status), `distsync status` on the
//! command line).
//!
//! A [`StatusReport`] lists, for the primitives whose names start with a prefix:
//! every lock, election, read-write lock and semaphore with someone holding or waiting
//! ([`LineStatus`]: holders, waiters in the order they will be served, a leader's value
//! and term, a semaphore's permit count), every non-empty queue ([`QueueStatus`]),
//! every held barrier and every double barrier with participants
//! ([`DoubleBarrierStatus`]), and, where the backend reports them, every counter
//! ([`CounterStatus`]), count-down latch ([`LatchStatus`]) and rate limiter
//! ([`RateLimiterStatus`]) written to.
//!
//! The report is read in one pass over the store and is a snapshot only as far as the
//! store allows: on etcd and memory it is one range read at one revision; on Redis
//! (a `SCAN` of the namespace, then reads) and PostgreSQL (a few `SELECT`s) a change
//! made while it is read may show half-done. It is for people and monitoring, never
//! for deciding who may write (use fencing tokens for that, see [`crate::fence`]).
//!
//! Backends build these types with their `new` constructors and `with_*` setters (or
//! by assigning the public fields), not with struct literals: fields are added as the
//! stores report more.
//!
//! What each store records differs; a field the store does not record is `None`:
//!
//! | field | etcd, memory | Redis | PostgreSQL |
//! |---|---|---|---|
//! | [`HoldStatus::token`] | the key's create revision | the grant's token | the grant's token where the table keeps it |
//! | [`HoldStatus::age`] | read-write locks (their keys carry the creation time) | not recorded | where a row keeps its creation time |
//! | [`HoldStatus::session`] | the lease id (hex) | the session id (hex) | the session id (hex) |
//! | [`HoldStatus::expires_in`] | the lease's TTL left (etcd's in whole seconds, rounded down) | the session key's `PTTL` | the session row's deadline, less the server's clock |
//!
//! On MySQL, [`HoldStatus::expires_in`] is the lease row's deadline less the server's
//! clock; on NATS, the end of the entry's key (its last write's time stamp plus its
//! `Nats-TTL`, the session's TTL) less the server's clock, `None` when that clock cannot
//! be read; on ZooKeeper it is `None`, because a session's timeout is known to the
//! server only.
//!
//! On etcd and memory, locks and elections share Go's key layout
//! (`<ns><name>/<lease hex>`), so the store cannot tell them apart: a line with a
//! non-empty value is reported as an election (candidates write their value; locks
//! write none), every other line as a lock.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::rate_limiter::Rate;
use crate::token::FencingToken;

/// The kind of a [`LineStatus`]: the primitives whose holders and waiters form a line.
///
/// `#[non_exhaustive]`: a new primitive with holders and waiters adds a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LineKind {
    /// A mutex ([`crate::Locker`]).
    Lock,
    /// An election ([`crate::Election`]).
    Election,
    /// A read-write lock ([`crate::RwLock`]).
    RwLock,
    /// A counting semaphore ([`crate::Semaphore`]).
    Semaphore,
}

impl LineKind {
    /// The kind as a word: `lock`, `election`, `rwlock`, `semaphore`.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Lock => "lock",
            LineKind::Election => "election",
            LineKind::RwLock => "rwlock",
            LineKind::Semaphore => "semaphore",
        }
    }
}

impl fmt::Display for LineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an entry holds or waits.
///
/// `#[non_exhaustive]`: a new primitive may hold in a new way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HoldMode {
    /// Alone: a lock, a write lock, a candidacy.
    Exclusive,
    /// With other readers: a read lock.
    Shared,
    /// One of a semaphore's permits.
    Permit,
}

impl HoldMode {
    /// The mode as a word: `exclusive`, `shared`, `permit`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldMode::Exclusive => "exclusive",
            HoldMode::Shared => "shared",
            HoldMode::Permit => "permit",
        }
    }
}

impl fmt::Display for HoldMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One holder or waiter of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HoldStatus {
    /// The store key (or row) that represents the entry, as a guard's `key()` shows it.
    pub key: String,
    /// How it holds or waits.
    pub mode: HoldMode,
    /// The id of the session it is held through, as [`SessionId`](crate::SessionId)
    /// displays it (hex; on etcd the lease id), if the store records it.
    pub session: Option<String>,
    /// The fencing token of the grant (holders only, exclusive and permit modes).
    pub token: Option<FencingToken>,
    /// How long ago the entry joined the line, if the store records when.
    pub age: Option<Duration>,
    /// How long the session the entry is held through has left when the report was
    /// read, unless it is renewed before then: the store's own count (a lease's TTL, a
    /// key's expiry, a session row's deadline), so a session whose renewals stopped
    /// shows it running down. `None` where the store does not say (ZooKeeper keeps a
    /// session's timeout on the server only).
    pub expires_in: Option<Duration>,
}

impl HoldStatus {
    /// The entry stored at `key`, holding or waiting in `mode`, with no session, token
    /// or age recorded (the `with_*` setters add what the store records).
    pub fn new(key: impl Into<String>, mode: HoldMode) -> Self {
        Self {
            key: key.into(),
            mode,
            session: None,
            token: None,
            age: None,
            expires_in: None,
        }
    }

    /// Sets [`HoldStatus::session`].
    #[must_use]
    pub fn with_session(mut self, session: Option<String>) -> Self {
        self.session = session;
        self
    }

    /// Sets [`HoldStatus::token`].
    #[must_use]
    pub fn with_token(mut self, token: Option<FencingToken>) -> Self {
        self.token = token;
        self
    }

    /// Sets [`HoldStatus::age`].
    #[must_use]
    pub fn with_age(mut self, age: Option<Duration>) -> Self {
        self.age = age;
        self
    }

    /// Sets [`HoldStatus::expires_in`].
    #[must_use]
    pub fn with_expires_in(mut self, expires_in: Option<Duration>) -> Self {
        self.expires_in = expires_in;
        self
    }
}

/// The leader of an election.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderStatus {
    /// The value the leader campaigned with or last proclaimed.
    pub value: Bytes,
    /// The leader's term (its fencing token).
    pub term: FencingToken,
}

impl LeaderStatus {
    /// The leader with `value` in `term`.
    pub fn new(value: impl Into<Bytes>, term: FencingToken) -> Self {
        Self {
            value: value.into(),
            term,
        }
    }
}

/// A lock, an election, a read-write lock or a semaphore with live entries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LineStatus {
    /// What it is.
    pub kind: LineKind,
    /// Its name.
    pub name: String,
    /// The entries holding it now (for an election: the leader).
    pub holders: Vec<HoldStatus>,
    /// The entries waiting, first to be served first.
    pub waiters: Vec<HoldStatus>,
    /// Elections with a leader: the leader's value and term.
    pub leader: Option<LeaderStatus>,
    /// Semaphores: the permit count in use, if the store records it.
    pub permits: Option<usize>,
}

impl LineStatus {
    /// The line of `kind` named `name`, with no entries yet (push them onto
    /// [`LineStatus::holders`] and [`LineStatus::waiters`]), no leader and no permit
    /// count.
    pub fn new(kind: LineKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            holders: Vec::new(),
            waiters: Vec::new(),
            leader: None,
            permits: None,
        }
    }

    /// Sets [`LineStatus::leader`].
    #[must_use]
    pub fn with_leader(mut self, leader: Option<LeaderStatus>) -> Self {
        self.leader = leader;
        self
    }

    /// Sets [`LineStatus::permits`].
    #[must_use]
    pub fn with_permits(mut self, permits: Option<usize>) -> Self {
        self.permits = permits;
        self
    }
}

/// A queue with items.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStatus {
    /// Its name.
    pub name: String,
    /// Items waiting to be dequeued.
    pub ready: usize,
    /// Items handed to a consumer and not yet acknowledged (or claimed by a dequeue
    /// call still under way), where the store keeps them apart.
    pub in_flight: usize,
}

impl QueueStatus {
    /// The queue `name` with `ready` items waiting and `in_flight` handed out.
    pub fn new(name: impl Into<String>, ready: usize, in_flight: usize) -> Self {
        Self {
            name: name.into(),
            ready,
            in_flight,
        }
    }
}

/// A double barrier with participants.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoubleBarrierStatus {
    /// Its name.
    pub name: String,
    /// Live participants.
    pub participants: usize,
    /// Whether the count was reached (the participants may go through `enter`).
    pub ready: bool,
}

impl DoubleBarrierStatus {
    /// The double barrier `name` with `participants` live, `ready` once its count was
    /// reached.
    pub fn new(name: impl Into<String>, participants: usize, ready: bool) -> Self {
        Self {
            name: name.into(),
            participants,
            ready,
        }
    }
}

/// A counter that was written to (one never written reads 0 and is not listed).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterStatus {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: i64,
}

impl CounterStatus {
    /// The counter `name` at `value`.
    pub fn new(name: impl Into<String>, value: i64) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// A count-down latch that was counted down at least once (before that, the store
/// has no latch to list).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatchStatus {
    /// Its name.
    pub name: String,
    /// The count it was made with.
    pub initial: u64,
    /// The remaining count: 0 once open.
    pub count: u64,
}

impl LatchStatus {
    /// The latch `name` of initial count `initial` with `count` left.
    pub fn new(name: impl Into<String>, initial: u64, count: u64) -> Self {
        Self {
            name: name.into(),
            initial,
            count,
        }
    }

    /// Whether the latch is open (its count reached zero).
    pub fn is_open(&self) -> bool {
        self.count == 0
    }
}

/// A rate limiter that granted a permit (an idle one that never did has no state).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimiterStatus {
    /// Its name.
    pub name: String,
    /// The rate it is used at, if the store's record says (it does on every backend
    /// of this workspace).
    pub rate: Option<Rate>,
    /// How long until one permit is due, on the store's clock when the report was
    /// read: zero when a permit is available now. `None` where the backend cannot
    /// read its store's clock for the report.
    pub next_due: Option<Duration>,
}

impl RateLimiterStatus {
    /// The rate limiter `name`, with no rate or next due time known (the `with_*`
    /// setters add what the store records).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rate: None,
            next_due: None,
        }
    }

    /// Sets [`RateLimiterStatus::rate`].
    #[must_use]
    pub fn with_rate(mut self, rate: Option<Rate>) -> Self {
        self.rate = rate;
        self
    }

    /// Sets [`RateLimiterStatus::next_due`].
    #[must_use]
    pub fn with_next_due(mut self, next_due: Option<Duration>) -> Self {
        self.next_due = next_due;
        self
    }
}

/// Who holds what under a prefix of names (see the [module docs](self)); built with
/// [`StatusReport::new`], then filled in through its public fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusReport {
    /// The backend that answered (`etcd`, `redis`, `postgres`, `memory`).
    pub backend: &'static str,
    /// The name prefix the report covers (empty: every name).
    pub prefix: String,
    /// Locks, elections, read-write locks and semaphores with live entries, by kind
    /// then name.
    pub lines: Vec<LineStatus>,
    /// Non-empty queues, by name.
    pub queues: Vec<QueueStatus>,
    /// Held barriers, by name.
    pub barriers: Vec<String>,
    /// Double barriers with participants, by name.
    pub double_barriers: Vec<DoubleBarrierStatus>,
    /// Counters written to, by name (empty where the backend does not report them).
    pub counters: Vec<CounterStatus>,
    /// Count-down latches created, by name (empty where the backend does not report
    /// them).
    pub latches: Vec<LatchStatus>,
    /// Rate limiters with state, by name (empty where the backend does not report
    /// them).
    pub rate_limiters: Vec<RateLimiterStatus>,
}

impl StatusReport {
    /// An empty report of `backend` for `prefix`.
    pub fn new(backend: &'static str, prefix: impl Into<String>) -> Self {
        Self {
            backend,
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Whether nothing is held, waited for or queued, and no counter, latch or rate
    /// limiter is listed.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
            && self.queues.is_empty()
            && self.barriers.is_empty()
            && self.double_barriers.is_empty()
            && self.counters.is_empty()
            && self.latches.is_empty()
            && self.rate_limiters.is_empty()
    }

    /// The line of `kind` named `name`, if it has live entries.
    pub fn line(&self, kind: LineKind, name: &str) -> Option<&LineStatus> {
        self.lines
            .iter()
            .find(|line| line.kind == kind && line.name == name)
    }

    /// Whether `name` is covered by the report's prefix.
    pub fn covers(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// Puts every list in its documented order (kind then name; names), and drops
    /// lines with no entry. For backends, after filling the report in.
    pub fn sort(&mut self) {
        self.lines
            .retain(|line| !line.holders.is_empty() || !line.waiters.is_empty());
        self.lines
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        self.queues
            .retain(|queue| queue.ready + queue.in_flight > 0);
        self.queues.sort_by(|a, b| a.name.cmp(&b.name));
        self.barriers.sort();
        self.barriers.dedup();
        self.double_barriers
            .retain(|barrier| barrier.participants > 0 || barrier.ready);
        self.double_barriers.sort_by(|a, b| a.name.cmp(&b.name));
        self.counters.sort_by(|a, b| a.name.cmp(&b.name));
        self.latches.sort_by(|a, b| a.name.cmp(&b.name));
        self.rate_limiters.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(key: &str) -> HoldStatus {
        HoldStatus::new(key, HoldMode::Exclusive)
    }

    #[test]
    fn sort_orders_by_kind_then_name_and_drops_empty_entries() {
        let line = |kind, name: &str, holders: Vec<HoldStatus>| {
            let mut line = LineStatus::new(kind, name);
            line.holders = holders;
            line
        };
        let mut report = StatusReport::new("memory", "");
        report.lines = vec![
            line(LineKind::Election, "a", vec![hold("e")]),
            line(LineKind::Lock, "b", vec![hold("b")]),
            line(LineKind::Lock, "a", vec![hold("a")]),
            line(LineKind::Lock, "empty", vec![]),
        ];
        report.queues = vec![QueueStatus::new("q", 0, 0), QueueStatus::new("p", 2, 0)];
        report.barriers = vec!["z".into(), "y".into(), "z".into()];
        report.sort();
        let order: Vec<_> = report
            .lines
            .iter()
            .map(|line| (line.kind, line.name.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (LineKind::Lock, "a"),
                (LineKind::Lock, "b"),
                (LineKind::Election, "a")
            ]
        );
        assert_eq!(report.queues.len(), 1);
        assert_eq!(report.barriers, ["y", "z"]);
        assert!(report.line(LineKind::Lock, "b").is_some());
        assert!(report.line(LineKind::Lock, "empty").is_none());
        assert!(!report.is_empty());
        assert!(StatusReport::new("memory", "x").is_empty());

        let mut counted = StatusReport::new("memory", "");
        counted.counters = vec![CounterStatus::new("b", 2), CounterStatus::new("a", 1)];
        assert!(!counted.is_empty());
        counted.sort();
        assert_eq!(counted.counters[0].name, "a");
        assert!(LatchStatus::new("l", 2, 0).is_open());
        assert!(!LatchStatus::new("l", 2, 1).is_open());
    }
}
