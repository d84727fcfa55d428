//! Clean-up work that must reach the store even though nobody awaits it (a dropped
//! guard, a cancelled wait): spawned, and retried while the failure is transient.

use std::time::Duration;

use distsync_core::Result;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long work without a stop signal keeps retrying.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Runs `op` in the background until it succeeds, fails for good, or `stop` fires
/// (the session it cleans up for is gone, so the store frees what is left by expiry).
/// At least one attempt is always made. Without a tokio runtime nothing runs, and what
/// `op` would release is left to expire.
pub(crate) fn spawn_retrying<F>(what: &'static str, stop: Option<CancellationToken>, op: F)
where
    F: Fn() -> BoxFuture<'static, Result<()>> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(what, "no tokio runtime to clean up in; left to expire");
        return;
    };
    runtime.spawn(async move {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            match op().await {
                Ok(()) => return,
                Err(error) if error.is_transient() => {
                    let stopped = stop.as_ref().is_some_and(CancellationToken::is_cancelled);
                    if stopped || started.elapsed() > GIVE_UP_AFTER {
                        tracing::warn!(what, %error, "background clean-up gave up");
                        return;
                    }
                    tracing::debug!(what, %error, "background clean-up failed; retrying");
                }
                Err(error) => {
                    tracing::warn!(what, %error, "background clean-up failed");
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
    });
}
