//! Timed acquisition: every blocking call has a `*_timeout` twin that gives up with
//! [`Error::Timeout`] and leaves nothing behind.
//!
//! The twins are provided methods of the primitive traits ([`crate::Locker::lock_timeout`],
//! [`crate::RwLock::read_timeout`], [`crate::Election::campaign_timeout`],
//! [`crate::Queue::dequeue_timeout`], [`crate::Barrier::wait_timeout`],
//! [`crate::DoubleBarrier::enter_timeout`], ...). Because every blocking call is cancel-safe
//! (dropping its future removes the waiter's entry), giving up is exactly dropping the
//! call's future at the deadline: wrapping a call in `tokio::time::timeout` yourself is
//! equally valid; the twins only save the mapping of the elapsed error to a typed
//! [`Error::Timeout`] carrying the duration.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Runs `call` for at most `timeout`; [`Error::Timeout`] (dropping `call`, which
/// removes its waiter's entry) when it has not finished by then.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

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
