//! The shared atomic counter: a named signed 64-bit integer that every process reads
//! and changes atomically.
//!
//! # Semantics
//!
//! - A counter that was never written reads 0; there is nothing to create.
//! - [`Counter::add`] is one atomic read-modify-write in the store (etcd, MySQL and
//!   memory: a transaction comparing the key's mod revision; Redis: one script;
//!   PostgreSQL: one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`; ZooKeeper:
//!   `setData` at the node's version read, or `create` where it is missing; NATS: a
//!   write conditional on the key's last sequence,
//!   `Nats-Expected-Last-Subject-Sequence`), so concurrent adds from any number of
//!   processes are never lost. Where the backend claims
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
//! - [`Counter::changed`] waits for the value to differ from one the caller saw. It
//!   reports values, not writes: a write of the same value is no change, and a change
//!   undone before the waiter reads (`1 → 2 → 1`) may go unseen. Backends wait on the
//!   store's own notifications (etcd and memory: a watch on the key; MySQL: a watch on
//!   the key, served by the process's one watch hub, which finds other processes'
//!   writes by reading the store's revision every `poll_interval`, 20 ms by default;
//!   Redis: pub/sub, published by every write; PostgreSQL: `NOTIFY` in the write's
//!   transaction; ZooKeeper: a data watch; NATS: an ordered consumer of the key's
//!   subject). All but NATS read again every [`CHANGED_SAFETY_NET`] in case a
//!   notification was lost; NATS reads again when its watch ends (at a reconnection,
//!   or an error of the consumer), and the ordered consumer recreates itself when the
//!   server's idle heartbeats stop. The trait's default, for backends without
//!   notifications, reads every [`CHANGED_POLL`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! let coordinator = distsync::connect("memory://").await?;
//! let visits = coordinator.counter("site/visits")?;
//! assert_eq!(visits.get().await?, 0);
//! assert_eq!(visits.add(5).await?, 5);
//! assert!(visits.compare_and_set(5, 10).await?);
//! assert!(!visits.compare_and_set(5, 11).await?);
//! assert_eq!(visits.get().await?, 10);
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::raw::{Look, RetryPolicy};

/// How often the default [`Counter::changed`] (a backend without notifications) reads
/// the counter: the bound on how late it sees a change, plus one read. A quarter of a
/// second keeps a waiter's cost at four small reads a second while staying well under
/// the human-noticeable delay of the protocols built on it (hand-overs, preference
/// and release requests).
pub const CHANGED_POLL: Duration = Duration::from_millis(250);

/// How long a [`Counter::changed`] that waits on the store's notifications waits for
/// one before it reads the counter anyway: a guard against a notification lost without
/// the backend noticing (a pub/sub message dropped by a proxy, a watch on a member that
/// went silent). Notifications are the rule, so this bounds only the rare lost one, at
/// the cost of one read (and one new subscription) per waiter per interval.
pub const CHANGED_SAFETY_NET: Duration = Duration::from_secs(5);

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

    /// Waits until the value differs from `seen` and returns it; at once if it already
    /// does. See the [module docs](self) for how soon a change is seen on each backend.
    ///
    /// The default reads the counter every [`CHANGED_POLL`] ([`poll_changed`]); backends
    /// with notifications override it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// # use distsync::store::memory::MemoryBackend;
    /// let coordinator = distsync::Coordinator::new(MemoryBackend::new());
    /// let jobs = coordinator.counter("jobs/done")?;
    /// let watcher = coordinator.counter("jobs/done")?;
    /// let waiting = tokio::spawn(async move { watcher.changed(0).await });
    /// jobs.add(3).await?;
    /// assert_eq!(waiting.await.expect("the waiting task")?, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The store's error when it is not transient. A transient one (the store
    /// unreachable) is waited out as every wait does ([`crate::raw::retry`]): bound the
    /// wait with `tokio::time::timeout` where an outage must end it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads and subscribes; dropping it leaves nothing behind,
    /// and a change made meanwhile is returned by the next call with the same `seen`.
    async fn changed(&self, seen: i64) -> Result<i64> {
        poll_changed(self, seen, CHANGED_POLL).await
    }
}

/// Reads `counter` every `interval` until its value differs from `seen`, and returns
/// it: the default [`Counter::changed`], for backends without notifications.
/// Transient store errors are waited out with the retry policy's pauses.
///
/// # Errors
/// The store's error when it is not transient.
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub async fn poll_changed<C: Counter + ?Sized>(
    counter: &C,
    seen: i64,
    interval: Duration,
) -> Result<i64> {
    RetryPolicy::default()
        .wait_until("a counter change", None, || async {
            let value = counter.get().await?;
            Ok(if value == seen {
                Look::NotYet(async {
                    tokio::time::sleep(interval).await;
                    Ok::<_, Error>(())
                })
            } else {
                Look::Ready(value)
            })
        })
        .await
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use super::*;

    /// A counter in this process that keeps the trait's default `changed`, and fails
    /// its first `failures` reads with a transient error, or with `fatal` ones.
    struct Local {
        name: Name,
        value: AtomicI64,
        failures: AtomicUsize,
        fatal: bool,
        reads: AtomicUsize,
    }

    impl Local {
        fn new(failures: usize, fatal: bool) -> Arc<Self> {
            Arc::new(Self {
                name: Name::new("c").unwrap(),
                value: AtomicI64::new(0),
                failures: AtomicUsize::new(failures),
                fatal,
                reads: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl Counter for Local {
        fn name(&self) -> &Name {
            &self.name
        }

        async fn get(&self) -> Result<i64> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            match (failing, self.fatal) {
                (false, _) => Ok(self.value.load(Ordering::SeqCst)),
                (true, false) => Err(Error::connection("local", "unreachable")),
                (true, true) => Err(Error::backend("local", "refused")),
            }
        }

        async fn add(&self, delta: i64) -> Result<i64> {
            Ok(self.value.fetch_add(delta, Ordering::SeqCst) + delta)
        }

        async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
            Ok(self
                .value
                .compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok())
        }

        async fn set(&self, value: i64) -> Result<()> {
            self.value.store(value, Ordering::SeqCst);
            Ok(())
        }
    }

    const BOUND: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test]
    async fn changed_answers_at_once_when_the_value_already_differs() {
        let counter = Local::new(0, false);
        counter.set(7).await.unwrap();
        let value = tokio::time::timeout(BOUND, counter.changed(0)).await;
        assert_eq!(value.unwrap().unwrap(), 7);
        assert_eq!(counter.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_default_changed_sees_a_later_change() {
        let counter = Local::new(0, false);
        let waiter = Arc::clone(&counter);
        let waiting = tokio::spawn(async move { waiter.changed(0).await });
        // Wait (bounded) until the waiter has read the old value at least once, so the
        // change below comes while it waits.
        let deadline = tokio::time::Instant::now() + BOUND;
        while counter.reads.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the waiter never read"
            );
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        counter.add(2).await.unwrap();
        let value = tokio::time::timeout(BOUND, waiting).await.unwrap().unwrap();
        assert_eq!(value.unwrap(), 2);
    }

    #[tokio::test]
    async fn polling_waits_out_transient_errors_and_returns_others() {
        let flaky = Local::new(3, false);
        flaky.set(1).await.unwrap();
        let value = tokio::time::timeout(BOUND, poll_changed(&*flaky, 0, CHANGED_POLL)).await;
        assert_eq!(value.unwrap().unwrap(), 1);
        assert_eq!(flaky.reads.load(Ordering::SeqCst), 4);

        let broken = Local::new(1, true);
        broken.set(1).await.unwrap();
        let error = tokio::time::timeout(BOUND, broken.changed(0))
            .await
            .unwrap();
        assert!(matches!(error, Err(Error::Backend { .. })));
    }

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
