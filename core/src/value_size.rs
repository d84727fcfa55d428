//! The size check of a caller's value: the largest value a store takes
//! ([`Capabilities::max_value_size`]) and the one function that refuses a larger one
//! with [`Error::TooLarge`] before anything is sent.
//!
//! Where it runs: in the layer every handle a [`Coordinator`](crate::Coordinator) hands
//! out passes through, never in a backend. A value enters through the `_bytes` trait
//! methods of [`Queue`](crate::Queue) and [`Election`](crate::Election) (which a caller
//! may call directly, so the inherent `enqueue`/`campaign` alone would miss them), and
//! through the core types every store's holds and transactions are:
//! [`Leadership::proclaim`](crate::Leadership::proclaim),
//! [`LockGuard::put_if_held`](crate::LockGuard::put_if_held) (which
//! [`Permit::put_if_held`](crate::Permit::put_if_held) calls) and [`StmTx::put`]. So the
//! coordinator's queue and election wrappers (`instrument.rs`) check the first two, and
//! give their [`ValueLimit`] to every leadership, guard and permit they hand out and to
//! its [`Stm`](crate::Stm), which check the rest; the group, which campaigns on the
//! backend's election directly, checks its member's metadata itself. One check in core
//! then covers every store alike, a store out of this workspace included, and no two
//! stores can answer an oversized value differently. A primitive made directly through
//! [`Backend`](crate::Backend) (the backend author's API, as for metrics) carries no
//! check: the store answers as it does.
//!
//! [`StmTx::put`]: crate::StmTx::put
//! [`Capabilities::max_value_size`]: crate::Capabilities::max_value_size

use crate::error::{Error, Result};

/// A store's limit on a caller's value, as the handles of a
/// [`Coordinator`](crate::Coordinator) carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValueLimit {
    backend: &'static str,
    max: usize,
}

impl ValueLimit {
    /// The limit of `max` bytes of the store `backend`, as its capabilities declare it
    /// (`Capabilities::value_limit`).
    pub(crate) fn new(backend: &'static str, max: usize) -> Self {
        Self { backend, max }
    }

    /// Refuses a value of `size` bytes above the limit; `what` names the value in the
    /// error.
    pub(crate) fn check(self, what: &'static str, size: usize) -> Result<()> {
        if size > self.max {
            return Err(Error::TooLarge {
                backend: self.backend,
                what,
                size,
                limit: self.max,
            });
        }
        Ok(())
    }
}

/// Checks `size` against `limit` where there is one (a hold or a transaction handed out
/// by a [`Coordinator`](crate::Coordinator)).
pub(crate) fn check(limit: Option<ValueLimit>, what: &'static str, size: usize) -> Result<()> {
    limit.map_or(Ok(()), |limit| limit.check(what, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_at_the_limit_passes_and_one_byte_over_is_refused_naming_both() {
        let limit = ValueLimit::new("test", 10);
        assert!(limit.check("queue item", 10).is_ok());
        assert!(limit.check("queue item", 0).is_ok());
        let refused = limit.check("queue item", 11).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::TooLarge {
                    backend: "test",
                    what: "queue item",
                    size: 11,
                    limit: 10
                }
            ),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "test: queue item of 11 bytes is larger than the store's limit of 10 bytes"
        );
        assert!(!refused.is_transient() && !refused.may_have_applied());
        assert!(check(None, "queue item", usize::MAX).is_ok());
    }
}
