//! The waiting of a blocking call on a notification: core's waiting loop
//! ([`RetryPolicy::wait_until`]) with the hub's subscription as the change it waits for.
//!
//! Every blocking call that waits on a notification (a barrier's or a latch's wait, a
//! counter's `changed`, a queue consumer's place in line) waits alike: it subscribes
//! to its payload *before* it looks (see [`crate::notify`]), looks, and, when what it
//! waits for has not come, waits for the payload to be notified, or for a re-check
//! delay the look names, then looks again. Transient failures of the subscription, of
//! a look and of the wait are ridden out as core's loop does for every store; each
//! caller writes only its look.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use distsync_core::raw::retry::Look;
use distsync_core::raw::RetryPolicy;
use distsync_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::notify::Wake;
use crate::store::Shared;

/// What a look asks for when it did not find what it waits for: a wake-up of its
/// payload, or at most this long without one (`Duration::ZERO`: look again at once).
pub(crate) type Recheck = Option<Duration>;

/// Subscribes to `payload`, then runs `look` until it answers [`Look::Ready`]. A look
/// that answers [`Look::NotYet`] waits for a notification of the payload or its
/// [`Recheck`]; the next look is handed why the wait ended (`Some` wake-up, or `None`
/// for the first look and a re-check). `what` names the wait in log lines; `lost` ends
/// it with [`Error::SessionLost`].
///
/// # Errors
/// [`Error::SessionLost`] when `lost` fires; the error of a subscription or a look
/// that is not transient.
///
/// Cancel-safety: cancel-safe; the subscription ends with the future.
pub(crate) async fn wait_until<T, F, Fut>(
    shared: &Shared,
    payload: String,
    what: &'static str,
    lost: Option<&CancellationToken>,
    mut look: F,
) -> Result<T>
where
    F: FnMut(Option<Wake>) -> Fut,
    Fut: Future<Output = Result<Look<T, Recheck>>>,
{
    let subscribing = || shared.hub.subscribe(payload.clone());
    let subscription = RetryPolicy::default().wait(what, lost, subscribing).await?;
    // Shared by the waits the loop makes in turn, one at a time.
    let subscription = tokio::sync::Mutex::new(subscription);
    let woke = Mutex::new(None);
    RetryPolicy::default()
        .wait_until(what, lost, || {
            let looking = look(woke.lock().unwrap_or_else(PoisonError::into_inner).take());
            let (subscription, woke) = (&subscription, &woke);
            async move {
                Ok(match looking.await? {
                    Look::Ready(value) => Look::Ready(value),
                    Look::NotYet(recheck) => Look::NotYet(async move {
                        let mut subscription = subscription.lock().await;
                        let wake = tokio::select! {
                            wake = subscription.changed() => Some(wake?),
                            () = sleep_or_forever(recheck) => None,
                            () = cancelled(lost) => return Err(Error::SessionLost),
                        };
                        *woke.lock().unwrap_or_else(PoisonError::into_inner) = wake;
                        Ok(())
                    }),
                })
            }
        })
        .await
}

/// Sleeps for `delay`, or forever without one.
async fn sleep_or_forever(delay: Recheck) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// Ends when `lost` fires, or never without it.
async fn cancelled(lost: Option<&CancellationToken>) {
    match lost {
        Some(lost) => lost.cancelled().await,
        None => std::future::pending().await,
    }
}
