//! Clean-up work that must reach the store even though nobody awaits it (a dropped
//! guard, a failed unlock, a cancelled wait or dequeue): spawned, and retried until it
//! is done.
//!
//! Every clean-up this backend sends is idempotent (a release compares the entry's
//! value before deleting it; a put-back or acknowledgement is keyed by its call id), so
//! retrying one that may have landed is harmless. A transient failure (the connection,
//! a server restarting, loading, busy or out of memory) is retried with a pause growing
//! to [`MAX_PAUSE`], with no time limit:
//!
//! * a release of something held through a session, until it succeeds or the session
//!   ends (then the store frees what is left: the lease is revoked or expires);
//! * a queue put-back or acknowledgement (no session), until it succeeds: meanwhile
//!   the item waits in its queue's in-flight records, neither lost nor delivered.
//!
//! A failure that retrying cannot cure (refused by the server's ACLs, say) ends the
//! work at once and runs its `give_up` step: a release then ends the whole session, so
//! that the store frees the entry rather than a live keepalive renewing it forever.

use std::time::Duration;

use distsync_core::{Error, Result};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// What to do when the work fails for good (not after `stop`).
pub(crate) type GiveUp = Box<dyn FnOnce(Error) -> BoxFuture<'static, ()> + Send>;

/// Runs `op` in the background until it succeeds, `stop` fires (the session it cleans
/// up for is gone, so the store frees what is left), or it fails with an error that is
/// not transient (then `give_up` runs). At least one attempt is always made. Without a
/// tokio runtime nothing runs, and what `op` would release is left to expire.
pub(crate) fn spawn_retrying<F>(
    what: &'static str,
    stop: Option<CancellationToken>,
    op: F,
    give_up: Option<GiveUp>,
) where
    F: Fn() -> BoxFuture<'static, Result<()>> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(what, "no tokio runtime to clean up in; left to expire");
        return;
    };
    runtime.spawn(retry(what, stop, op, give_up));
}

async fn retry<F>(
    what: &'static str,
    stop: Option<CancellationToken>,
    op: F,
    give_up: Option<GiveUp>,
) where
    F: Fn() -> BoxFuture<'static, Result<()>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempts: u64 = 0;
    loop {
        attempts += 1;
        match op().await {
            Ok(()) => {
                if attempts > 1 {
                    tracing::debug!(what, attempts, "background clean-up done");
                }
                return;
            }
            Err(error) if error.is_transient() => {
                if stop.as_ref().is_some_and(CancellationToken::is_cancelled) {
                    tracing::debug!(what, %error, "background clean-up stopped: the session ended");
                    return;
                }
                // Warn once in a while, not at every attempt of a long outage.
                if attempts.is_power_of_two() {
                    tracing::warn!(what, %error, attempts, "background clean-up failed; retrying");
                }
            }
            Err(error) => {
                tracing::warn!(what, %error, "background clean-up failed for good");
                if let Some(give_up) = give_up {
                    give_up(error).await;
                }
                return;
            }
        }
        match &stop {
            Some(stop) => {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => tokio::time::sleep(pause).await,
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    fn failing(
        times: u32,
        error: fn() -> Error,
    ) -> (Arc<AtomicU32>, impl Fn() -> BoxFuture<'static, Result<()>>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let op = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let result = if n < times { Err(error()) } else { Ok(()) };
            Box::pin(async move { result }) as BoxFuture<'static, Result<()>>
        };
        (calls, op)
    }

    fn transient() -> Error {
        Error::connection("redis", "down")
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_for_as_long_as_it_takes() {
        // An hour of failures (far past the old 600 s limit), then success.
        let times = 2000;
        let (calls, op) = failing(times, transient);
        let started = tokio::time::Instant::now();
        retry("test", None, op, None).await;
        assert_eq!(calls.load(Ordering::SeqCst), times + 1);
        assert!(started.elapsed() > Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_session_ends() {
        let (calls, op) = failing(u32::MAX, transient);
        let stop = CancellationToken::new();
        let task = tokio::spawn(retry("test", Some(stop.clone()), op, None));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!task.is_finished());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("still retrying after the session ended")
            .unwrap();
        assert!(calls.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_gives_up_at_once() {
        let (calls, op) = failing(u32::MAX, || Error::NotHeld);
        let gave_up = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&gave_up);
        let give_up: GiveUp = Box::new(move |error| {
            assert!(matches!(error, Error::NotHeld));
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        });
        retry("test", None, op, Some(give_up)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(gave_up.load(Ordering::SeqCst), 1);
    }
}
