//! The waiting of a blocking call: the subscription that wakes it and the retry state
//! of the looks it takes at the store between wake-ups.
//!
//! Every blocking call (a barrier's or a latch's wait, a counter's `changed`, a
//! dequeue, a place in a waiter line, the unfair lock) waits alike: it subscribes to
//! its channel (see [`crate::notify`] for why before it looks), looks at the store,
//! and, when what it waits for has not come, waits for a wake-up or a re-check delay.
//! A look that fails with a transient error is waited out with the wait's pauses
//! (`distsync_core::raw::retry`), a wake-up cutting the pause short; any other error
//! ends the wait. This type holds both halves so that each caller writes only its
//! look and what a wake-up means to it.

use std::time::Duration;

use distsync_core::raw::WaitRetry;
use distsync_core::{Error, Result};

use crate::notify::{Event, Subscription};
use crate::store::Shared;

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
        let wake = subscribe(shared, channel, &mut retry).await?;
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

    /// A look failed with `error`: as [`Waiting::failed`], then sleeps the pause, which
    /// a wake-up cuts short; returns that wake-up, if one came.
    ///
    /// Cancel-safety: cancel-safe; an event is never lost by dropping the future.
    pub(crate) async fn pause_after(&mut self, error: Error) -> Result<Option<Event>> {
        let pause = self.failed(error)?;
        self.next_within(pause).await
    }

    /// The next wake-up, or `None` when none comes within `delay`.
    ///
    /// Cancel-safety: cancel-safe; an event is never lost by dropping the future.
    pub(crate) async fn next_within(&mut self, delay: Duration) -> Result<Option<Event>> {
        tokio::select! {
            event = self.wake.recv() => event.map(Some),
            () = tokio::time::sleep(delay) => Ok(None),
        }
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

/// Subscribes to `channel` (a channel name under the namespace) for a wait whose retry
/// state is `retry`, waiting out a store that cannot be reached with its pauses; for a
/// call that waits only at times, and so keeps its retry state apart.
///
/// # Errors
/// The subscription's error when it is not transient.
///
/// Cancel-safety: cancel-safe; a dropped call leaves no subscription behind.
pub(crate) async fn subscribe(
    shared: &Shared,
    channel: &str,
    retry: &mut WaitRetry,
) -> Result<Subscription> {
    shared
        .notifier
        .subscribe_waiting(shared.keys.channel(channel), retry)
        .await
}
