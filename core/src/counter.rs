//! The shared atomic counter: a named signed 64-bit integer that every process reads
//! and changes atomically.
//!
//! # Semantics
//!
//! - A counter that was never written reads 0; there is nothing to create.
//! - [`Counter::add`] is one atomic read-modify-write in the store (etcd: a
//!   transaction comparing the key's mod revision; Redis: one script; PostgreSQL: one
//!   `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), so concurrent adds from any
//!   number of processes are never lost. Where the backend claims
//!   [`crate::Capabilities::linearizable`], reads and changes are linearizable.
//! - Overflow is refused, never wrapped: an add that would leave the `i64` range is
//!   [`Error::InvalidArgument`] and changes nothing.
//! - **`add` is not idempotent**, so no backend repeats it after an ambiguous failure
//!   (a request sent whose reply was lost). Such a failure is reported with
//!   [`Error::may_have_applied`] true: the add may or may not have been applied, at
//!   most once. A caller that must know reads the counter (or keeps its own
//!   idempotence key) before adding again.
//! - [`Counter::compare_and_set`] is not repeated after an ambiguous failure either:
//!   a repeat of a CAS that was applied would see its own write and answer `false`.
//!   It answers `true` if it replaced `expected` by `new`, `false` (changing nothing)
//!   if the value was not `expected`; read the current value with [`Counter::get`].
//! - [`Counter::set`] is idempotent: repeating it writes the same value, so backends
//!   may repeat it through an outage.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
//! let coordinator = distsync_core::Coordinator::new(distsync_kv::memory::MemoryBackend::new());
//! let visits = coordinator.counter("site/visits")?;
//! assert_eq!(visits.get().await?, 0);
//! assert_eq!(visits.add(5).await?, 5);
//! assert!(visits.compare_and_set(5, 10).await?);
//! assert!(!visits.compare_and_set(5, 11).await?);
//! assert_eq!(visits.get().await?, 10);
//! # Ok(()) }
//! ```

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::Name;

/// A named shared counter (see the [module docs](self) for what each call
/// guarantees).
///
/// Every method is a single request to the store (or a short bounded loop of
/// compare-and-swap transactions that write nothing until one succeeds), so dropping
/// a call's future leaves the counter either unchanged or changed once: calls are
/// cancel safe in that sense, though a dropped `add` may have been applied.
#[async_trait]
pub trait Counter: Send + Sync {
    /// The counter's name.
    fn name(&self) -> &Name;

    /// The current value (0 if never written).
    ///
    /// # Errors
    /// The store's error.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    async fn get(&self) -> Result<i64>;

    /// Adds `delta` (which may be negative) and returns the new value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the result would overflow `i64` (nothing
    /// changes); the store's error, with [`Error::may_have_applied`] true when the add
    /// may have been applied (it is never repeated, see the [module docs](self)).
    ///
    /// # Cancel safety
    /// Dropping the future may leave the add applied or not, never applied twice.
    async fn add(&self, delta: i64) -> Result<i64>;

    /// Sets the value to `new` if it is `expected`; whether it did.
    ///
    /// # Errors
    /// The store's error, with [`Error::may_have_applied`] true when the swap may
    /// have been applied (it is never repeated).
    ///
    /// # Cancel safety
    /// As [`Counter::add`].
    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool>;

    /// Sets the value to `value` unconditionally.
    ///
    /// # Errors
    /// The store's error.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the old value or `value`.
    async fn set(&self, value: i64) -> Result<()>;
}

/// `current + delta`, or the [`Error::InvalidArgument`] every backend returns for an
/// add that would overflow the counter `name`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the counter, its value and the delta.
pub fn checked_add(name: &Name, current: i64, delta: i64) -> Result<i64> {
    current.checked_add(delta).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "counter {:?}: adding {delta} to {current} overflows a 64-bit signed integer",
            name.as_str()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_a_typed_error() {
        let name = Name::new("c").unwrap();
        assert_eq!(checked_add(&name, 1, 2).unwrap(), 3);
        assert_eq!(checked_add(&name, i64::MIN, i64::MAX).unwrap(), -1);
        let error = checked_add(&name, i64::MAX, 1).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
        assert!(!error.may_have_applied());
        assert!(checked_add(&name, i64::MIN, -1).is_err());
    }
}
