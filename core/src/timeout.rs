//! Bounding a wait: one function, [`timeout`], for every blocking call.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// Runs the distsync call `call` for at most `limit`, as [`tokio::time::timeout`] does,
/// and tells why it gave up in the error: [`Error::Timeout`](crate::Error::Timeout)
/// when the store was answering and nobody released in time, or the store's transient
/// error ([`Error::Connection`](crate::Error::Connection)) when the deadline passed
/// while the wait was riding out an outage (see [`crate::raw::retry`]), so that "the
/// store is down" and "the lock is busy" stay apart.
///
/// Every blocking call (`lock`, `read`, `write`, `acquire`, `campaign`, `dequeue`,
/// `receive`, a barrier's `wait`, `enter` and `leave`, a latch's `wait`, ...) is
/// cancel-safe: dropping it at the deadline removes its waiter's entry and never
/// leaves anything held, so this is all a bounded wait needs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use std::time::Duration;
/// use distsync::{timeout, Error};
///
/// let coordinator = distsync::connect("memory://").await?;
/// let (first, second) = (coordinator.session().await?, coordinator.session().await?);
/// let held = coordinator.locker(&first, "jobs/nightly")?.lock().await?;
/// let waiter = coordinator.locker(&second, "jobs/nightly")?;
/// let waited = timeout(Duration::from_millis(50), waiter.lock()).await;
/// assert!(matches!(waited, Err(Error::Timeout(_))));
/// held.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `call`'s own error; [`Error::Timeout`](crate::Error::Timeout) carrying `limit`; or
/// the store's transient error, as above.
///
/// # Cancel safety
/// As cancel-safe as `call`.
pub async fn timeout<T>(limit: Duration, call: impl Future<Output = Result<T>>) -> Result<T> {
    crate::raw::retry::with_deadline(limit, call).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_finish_in_time_is_a_typed_timeout() {
        let pending = timeout(
            Duration::from_millis(50),
            std::future::pending::<Result<()>>(),
        );
        assert!(matches!(pending.await, Err(Error::Timeout(d)) if d == Duration::from_millis(50)));
        let done = timeout(Duration::from_millis(50), async { Ok(7) });
        assert_eq!(done.await.unwrap(), 7);
    }
}
