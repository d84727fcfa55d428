//! The waiting of a blocking call: the subscription that wakes it and the retry state
//! of the looks it takes at the store between wake-ups.
//!
//! Every blocking call (a barrier's or a latch's wait, a counter's `changed`, a
//! dequeue, a place in a waiter line, the unfair lock) waits alike: it subscribes to
//! its channel (see [`crate::notify`] for why before it looks), looks at the store,
//! and, when what it waits for has not come, waits for a wake-up or a re-check delay.
//! A look that fails with a transient error is waited out with the wait's pauses
//! (`distsync_core::raw::retry`); any other error ends the wait.
//!
//! A call whose look says all there is to say about the wait runs [`wait_until`]:
//! core's waiting loop, woken by the subscription. The lock
//! waits, which act on what a wake-up carries and keep their subscription from one
//! wait to the next, hold a [`Waiting`]: both halves, so that each writes only its
//! look and what a wake-up means to it.

use std::future::Future;
use std::time::Duration;

use distsync_core::raw::{Look, RetryPolicy, WaitRetry};
use distsync_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::notify::{Event, Subscription};
use crate::store::Shared;

/// Added to every wait for a key's TTL to run out (a holder's, a waiter's, a
/// leader's), so that the key has really expired by then.
pub(crate) const RECHECK_MARGIN: Duration = Duration::from_millis(5);

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Subscribes to `channel` (a channel name under the namespace) through transient
/// failures, then runs core's waiting loop ([`RetryPolicy::wait_woken`]) on that
/// subscription: a look is handed whether a message came since the one before
/// (`Some(false)`: only a resubscription). `what` names the wait in log lines; `lost`
/// ends it with [`Error::SessionLost`].
///
/// # Errors
/// As [`RetryPolicy::wait_woken`].
///
/// Cancel-safety: cancel-safe; the subscription ends with the future.
pub(crate) async fn wait_until<T, F, Fut>(
    shared: &Shared,
    channel: &str,
    what: &'static str,
    lost: Option<&CancellationToken>,
    look: F,
) -> Result<T>
where
    F: FnMut(Option<bool>) -> Fut,
    Fut: Future<Output = Result<Look<T, Option<Duration>>>>,
{
    let channel = shared.keys.channel(channel);
    let subscribing = || shared.notifier.subscribe(channel.clone());
    let subscription = RetryPolicy::default().wait(what, lost, subscribing).await?;
    RetryPolicy::default()
        .wait_woken(what, lost, subscription, look)
        .await
}

/// A blocking call's subscription and the retry state of its looks.
pub(crate) struct Waiting {
    wake: Subscription,
    retry: WaitRetry,
}

impl Waiting {
    /// The waiting named `what` (in log lines), subscribed to `channel` (a channel
    /// name under the namespace, as [`crate::keys::Keys::channel`] takes it): a store
    /// that cannot be reached is waited out with the waiting's own pauses.
    ///
    /// # Errors
    /// The subscription's error when it is not transient.
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves no subscription behind.
    pub(crate) async fn subscribe(
        shared: &Shared,
        channel: &str,
        what: &'static str,
    ) -> Result<Self> {
        let mut retry = WaitRetry::new(what);
        let channel = shared.keys.channel(channel);
        let wake = shared
            .notifier
            .subscribe_waiting(channel, &mut retry)
            .await?;
        Ok(Self { wake, retry })
    }

    /// The waiting named `what` on `wake`, a subscription kept from an earlier wait.
    pub(crate) fn kept(wake: Subscription, what: &'static str) -> Self {
        Self {
            wake,
            retry: WaitRetry::new(what),
        }
    }

    /// The subscription, to be kept for a later wait.
    pub(crate) fn into_subscription(self) -> Subscription {
        self.wake
    }

    /// A look got the store's answer: an outage in progress is over.
    pub(crate) fn answered(&mut self) {
        self.retry.succeeded();
    }

    /// A look failed with `error`: the pause before the next look, or `error` itself
    /// when it is not transient (the wait ends with it).
    pub(crate) fn failed(&mut self, error: Error) -> Result<Duration> {
        self.retry.failed(&error).ok_or(error)
    }

    /// The next wake-up.
    ///
    /// Cancel-safety: cancel-safe; an event is never lost by dropping the future.
    pub(crate) async fn recv(&mut self) -> Result<Event> {
        self.wake.recv().await
    }

    /// Discards wake-ups already delivered (a fresh look supersedes them).
    pub(crate) fn drain(&mut self) {
        self.wake.drain();
    }
}
