//! Retrying the recipes' idempotent writes (releases, put-backs) through transient
//! store failures.
//!
//! A backend's [`Kv`](crate::kv::Kv) already retries what it safely can (etcd: a
//! request that was never sent, or a read); a transaction that may have reached the
//! store fails with a transient error ([`Error::is_transient`]) instead, e.g. during an
//! etcd leader change. The recipes know which of their transactions are idempotent
//! (a compare-and-delete on a key's create revision, a put-back guarded by the
//! in-flight record it removes) and retry those here, with exponential backoff, until
//! they succeed, fail for another reason, or a deadline or a stop signal says the
//! retry is pointless.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use distsync_core::error::{Error, Result};
use distsync_core::raw::Backoff;

/// The first pause after a transient failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Exponential backoff from 10 ms, doubling up to 1 s.
fn backoff() -> Backoff {
    Backoff::new(FIRST_BACKOFF, MAX_BACKOFF)
}

/// Why [`retry_transient`] stopped without a success.
#[derive(Debug)]
pub(crate) enum GaveUp {
    /// The operation failed with an error that is not transient.
    Failed(Error),
    /// It kept failing transiently until the deadline; the last error.
    Deadline(Error),
    /// `stop` fired while it was failing transiently; the last error.
    Stopped(Error),
}

impl GaveUp {
    /// The error behind it.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Self::Failed(error) | Self::Deadline(error) | Self::Stopped(error) => error,
        }
    }
}

/// Runs `operation` until it succeeds or fails with an error that is not transient,
/// pausing with a [`Backoff`] after each transient failure; gives up (with the last
/// error) once the next attempt would start after `deadline`, or when `stop` fires.
///
/// `operation` must be idempotent: an attempt whose reply was lost may have been
/// applied. Cancel-safe: dropping the future drops the attempt in flight.
pub(crate) async fn retry_transient<T, F, Fut>(
    what: &'static str,
    key: &str,
    deadline: Instant,
    stop: Option<&CancellationToken>,
    mut operation: F,
) -> std::result::Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = backoff();
    let mut attempt = 1u32;
    loop {
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() => error,
            Err(error) => return Err(GaveUp::Failed(error)),
        };
        if stop.is_some_and(CancellationToken::is_cancelled) {
            return Err(GaveUp::Stopped(error));
        }
        let pause = backoff.next_pause();
        if Instant::now() + pause > deadline {
            return Err(GaveUp::Deadline(error));
        }
        tracing::debug!(what, key, attempt, %error, "transient failure; retrying");
        match stop {
            Some(stop) => {
                tokio::select! {
                    () = stop.cancelled() => return Err(GaveUp::Stopped(error)),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => tokio::time::sleep(pause).await,
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Error {
        Error::connection("test", "leader changed")
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let mut calls = 0;
        let result = retry_transient(
            "test",
            "k",
            Instant::now() + Duration::from_secs(10),
            None,
            || {
                calls += 1;
                let fail = calls <= 3;
                async move {
                    if fail {
                        Err(transient())
                    } else {
                        Ok(calls)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_deadlines_and_stops_end_the_retries() {
        let failed = retry_transient("test", "k", Instant::now(), None, || async {
            Err::<(), _>(Error::NotHeld)
        })
        .await;
        assert!(matches!(failed, Err(GaveUp::Failed(Error::NotHeld))));

        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let late = retry_transient("test", "k", deadline, None, || async {
            Err::<(), _>(transient())
        })
        .await;
        assert!(matches!(late, Err(GaveUp::Deadline(_))));
        assert!(Instant::now() <= deadline);
        assert!(Instant::now() >= started + Duration::from_secs(3));

        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let stopped = retry_transient("test", "k", deadline, Some(&stop), || async {
            Err::<(), _>(transient())
        })
        .await;
        assert!(matches!(stopped, Err(GaveUp::Stopped(_))));
        assert!(Instant::now() < started + Duration::from_secs(6));
    }
}
