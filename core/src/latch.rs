//! The count-down latch: opens, once and for good, when its count reaches zero.
//!
//! # Semantics
//!
//! - A latch is made with an initial count (`Coordinator::latch(name, count)`); the
//!   factory does no I/O. The first [`CountDownLatch::count_down`] creates the latch
//!   in the store with that count, atomically with its own decrement, so two
//!   processes racing to create it make one latch (the store arbitrates which create
//!   wins; the other joins it).
//! - **The initial count is part of the latch.** A handle whose count differs from
//!   the stored latch's gets [`Error::InvalidArgument`] on every call that reads the
//!   latch, and changes nothing: two processes that disagree on the count are told,
//!   rather than one silently waiting for a count the other never reaches.
//! - Before it is created, a latch reads as its handle's initial count and is closed
//!   (a count of 0 is open at once).
//! - Counting down an open latch (count 0) is a no-op that returns 0.
//! - A latch is one-shot: it stays open; use a new name for a new round.
//! - `count_down` is not idempotent, so no backend repeats it after an ambiguous
//!   failure; such a failure has [`Error::may_have_applied`] true.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("memory://").await?;
//! let ready = coordinator.latch("deploy/ready", 2)?;
//! assert_eq!(ready.count().await?, 2);
//! assert_eq!(ready.count_down().await?, 1);
//! assert_eq!(ready.count_down().await?, 0);
//! ready.wait().await?; // open: returns at once
//! # Ok(()) }
//! ```

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::Name;

/// A named count-down latch (see the [module docs](self)).
#[async_trait]
pub trait CountDownLatch: Send + Sync {
    /// The latch's name.
    fn name(&self) -> &Name;

    /// The initial count this handle was made with.
    fn initial_count(&self) -> u64;

    /// The remaining count (0: open).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the stored latch has another initial count; the
    /// store's error.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn count(&self) -> Result<u64>;

    /// Decrements the count (creating the latch on first use) and returns the
    /// remaining count; 0 on an open latch.
    ///
    /// # Errors
    /// As [`CountDownLatch::count`]; a store error has [`Error::may_have_applied`]
    /// true when the decrement may have been applied (it is never repeated).
    ///
    /// # Cancel safety
    /// Dropping the future may leave the decrement applied or not, never twice.
    async fn count_down(&self) -> Result<u64>;

    /// Waits until the count is zero.
    ///
    /// # Errors
    /// As [`CountDownLatch::count`]. Transient store errors are ridden out while
    /// waiting.
    ///
    /// # Cancel safety
    /// Cancel safe: waiting writes nothing, so dropping the future leaves nothing
    /// behind.
    async fn wait(&self) -> Result<()>;
}

/// Checks a stored latch's initial count against a handle's: the
/// [`Error::InvalidArgument`] every backend returns on a disagreement.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the latch and both counts.
pub fn check_initial_count(name: &Name, handle: u64, stored: u64) -> Result<()> {
    if handle == stored {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "latch {:?} exists with initial count {stored}, not {handle}",
            name.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_mismatch_is_a_typed_error() {
        let name = Name::new("l").unwrap();
        assert!(check_initial_count(&name, 3, 3).is_ok());
        let error = check_initial_count(&name, 3, 4).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
        assert!(!error.may_have_applied());
    }
}
