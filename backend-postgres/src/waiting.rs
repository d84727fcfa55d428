//! The waiting of a blocking call: the subscription that wakes it and the retry state
//! of the reads it makes between notifications.
//!
//! Every blocking call that waits on a notification (a barrier's or a latch's wait, a
//! counter's `changed`, a queue consumer's place in line) waits alike: it subscribes
//! to its payload *before* it reads (see [`crate::notify`]), reads, and, when what it
//! waits for has not come, waits for the payload to be notified. A subscription or a
//! read that fails with a transient error is waited out with the wait's pauses
//! (`distsync_core::raw::retry`), one schedule for both; any other error ends the
//! wait. This type holds both halves so that each caller writes only its read and
//! what a notification means to it.

use distsync_core::raw::WaitRetry;
use distsync_core::{Error, Result};

use crate::notify::{Subscription, Wake};
use crate::store::Shared;

/// A blocking call's subscription and the retry state of its reads.
pub(crate) struct Waiting {
    subscription: Subscription,
    retry: WaitRetry,
}

impl Waiting {
    /// The waiting named `what` (in log lines), subscribed to `payload`: a store that
    /// cannot be reached is waited out with the waiting's own pauses.
    ///
    /// # Errors
    /// The subscription's error when it is not transient.
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves no subscription behind.
    pub(crate) async fn subscribe(
        shared: &Shared,
        payload: String,
        what: &'static str,
    ) -> Result<Self> {
        let mut retry = WaitRetry::new(what);
        loop {
            match shared.hub.subscribe(payload.clone()).await {
                Ok(subscription) => {
                    return Ok(Self {
                        subscription,
                        retry,
                    })
                }
                Err(error) => pause(&mut retry, error).await?,
            }
        }
    }

    /// A read got the store's answer: an outage in progress is over.
    pub(crate) fn answered(&mut self) {
        self.retry.succeeded();
    }

    /// A read failed with `error`: sleeps the pause before the next read, or returns
    /// `error` itself when it is not transient (the wait ends with it).
    ///
    /// Cancel-safety: cancel-safe; a sleep.
    pub(crate) async fn failed(&mut self, error: Error) -> Result<()> {
        pause(&mut self.retry, error).await
    }

    /// Waits for a notification of the payload that arrived after the subscription
    /// was made or after the previous call returned.
    ///
    /// # Errors
    /// [`Error::Connection`] if the backend (and so the hub) has been dropped.
    ///
    /// Cancel-safety: cancel-safe.
    pub(crate) async fn changed(&mut self) -> Result<Wake> {
        self.subscription.changed().await
    }
}

/// Sleeps `retry`'s pause after `error`, or returns `error` when it is not transient.
async fn pause(retry: &mut WaitRetry, error: Error) -> Result<()> {
    match retry.failed(&error) {
        Some(pause) => {
            tokio::time::sleep(pause).await;
            Ok(())
        }
        None => Err(error),
    }
}
