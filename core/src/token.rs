//! Fencing tokens.

use std::fmt;

use crate::error::{Error, Result};

/// A number that strictly increases across successive grants of the same lock,
/// write lock, leadership or semaphore permit, on every backend.
///
/// A holder can be paused (GC, SIGSTOP, a slow disk) past its lease, lose the lock to
/// another client, then wake up still believing it holds it. No lock service can
/// prevent that; what it can do is make the stale holder's writes detectable. Send the
/// token with every write to the protected resource and have the resource reject a
/// token lower than the highest it has seen.
///
/// Where the number comes from: etcd and MySQL, the lock key's create revision (plus
/// the epoch marker's offset, which keeps it growing across a store that forgot);
/// Redis, a counter incremented in the granting script; PostgreSQL, a counter row
/// updated in the acquiring transaction; ZooKeeper, the holder node's creation zxid
/// (`czxid`); NATS, the holder key's stream sequence; memory, the store's revision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The number as the value of a store's signed 64-bit counter: `what` (the use,
    /// e.g. "release requests for a fencing token") above 2^63 is
    /// [`Error::Unsupported`] on `backend`, never a wrapped negative number.
    pub(crate) fn counter_value(self, backend: &'static str, what: &str) -> Result<i64> {
        i64::try_from(self.0)
            .map_err(|_| Error::unsupported(backend, format!("{what} above 2^63 ({})", self.0)))
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FencingToken> for u64 {
    fn from(t: FencingToken) -> u64 {
        t.0
    }
}
