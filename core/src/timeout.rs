//! Timed acquisition: every blocking call has a `*_timeout` twin that gives up with
//! [`Error::Timeout`](crate::Error::Timeout) and leaves nothing behind.
//!
//! The twins are provided methods of the primitive traits ([`crate::Locker::lock_timeout`],
//! [`crate::RwLock::read_timeout`], [`crate::Election::campaign_timeout`](crate::Election),
//! [`crate::Queue::dequeue_timeout`], [`crate::Barrier::wait_timeout`],
//! [`crate::DoubleBarrier::enter_timeout`], ...). Because every blocking call is cancel-safe
//! (dropping its future removes the waiter's entry), giving up is exactly dropping the
//! call's future at the deadline: wrapping a call in `tokio::time::timeout` yourself is
//! equally valid; the twins also map the elapsed error to a typed
//! [`Error::Timeout`](crate::Error::Timeout) carrying the duration, or, when the
//! deadline passes while the store is failing, to the store's transient error, so
//! that a caller tells "the store is down" from "nobody released in time" (see
//! [`crate::raw::retry`]).

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// Runs `call` for at most `timeout`; when it has not finished by then, drops it
/// (which removes its waiter's entry) and returns
/// [`Error::Timeout`](crate::Error::Timeout), or the store's transient error when the
/// wait was riding out an outage (see [`crate::raw::retry`]).
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    crate::raw::retry::with_deadline(timeout, call).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_finish_in_time_is_a_typed_timeout() {
        let pending = timed(
            Duration::from_millis(50),
            std::future::pending::<Result<()>>(),
        );
        assert!(matches!(pending.await, Err(Error::Timeout(d)) if d == Duration::from_millis(50)));
        let done = timed(Duration::from_millis(50), async { Ok(7) });
        assert_eq!(done.await.unwrap(), 7);
    }
}
