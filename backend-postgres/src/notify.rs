//! One `LISTEN` connection per backend, fanning notifications out to waiters.
//!
//! Every change a waiter may care about (a queue item, a barrier release, a double-barrier
//! entry, a leader change) is announced by a trigger with `NOTIFY` on the schema's channel
//! `distsync_<schema oid>`, with the payload `<kind>:<name>`. The hub holds one
//! [`PgListener`] (one pooled connection, however many waiters there are) and bumps a
//! per-payload counter; waiters hold a subscription to it.
//!
//! A waiter subscribes *before* it reads the state it waits on, then waits for the
//! counter to move, then reads again: a change committed after the subscription is never
//! missed. When the listening connection is lost (notifications may have been dropped),
//! every subscription is woken once the listener is back, so waiters re-read.
//!
//! # Cost per subscription
//! Subscribers are indexed by payload in a map: subscribing, dropping a subscription
//! and delivering a notification each touch one entry, whatever the number of
//! subscriptions (10,000 sessions each watching `s:<id>` plus their waiters' `m:`
//! payloads). A payload's entry is removed when its last subscription is dropped, so
//! the map holds only payloads someone waits on; only a reconnection of the listener
//! visits them all (once).
//!
//! # Wake-ups that carry a value
//! A grant's wake-up `m:<session>.<entry>:<token>` wakes the subscribers of
//! `m:<session>.<entry>` and hands them the token ([`Subscription::token`]), so that the
//! granted waiter needs no read to learn it (see [`crate::waiter_line`]). The token is
//! kept once given: a grant holds until its entry leaves, and the subscription lives
//! only while its entry waits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::raw::{Backoff, Look, RetryPolicy, Wakes};
use distsync_core::{Error, Result};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{map, BACKEND};

/// The notification hub of one backend.
pub(crate) struct Hub {
    inner: Arc<HubInner>,
    task: OnceCell<AbortOnDropHandle<()>>,
}

struct HubInner {
    pool: PgPool,
    channel: String,
    subscribers: Mutex<HashMap<String, watch::Sender<Signal>>>,
    resyncs: AtomicU64,
}

/// What a payload's subscribers see: how many notifications arrived, and the value the
/// last one that carried a value gave (see the module docs).
#[derive(Clone, Copy, Default)]
struct Signal {
    count: u64,
    token: Option<i64>,
}

/// The subscription key and the carried value of `payload`: `m:<session>.<entry>:<token>`
/// is `m:<session>.<entry>` with `token`; any other payload is itself, with none. A
/// value that is not a number is not one: the payload is taken as it is.
fn split_payload(payload: &str) -> (&str, Option<i64>) {
    let carried = payload.strip_prefix("m:").and_then(|rest| {
        let (entry, token) = rest.split_once(':')?;
        Some((&payload[..2 + entry.len()], token.parse().ok()?))
    });
    carried.map_or((payload, None), |(key, token)| (key, Some(token)))
}

/// A waiter's interest in one payload; dropping the last subscription of a payload
/// removes it from the hub.
pub(crate) struct Subscription {
    receiver: watch::Receiver<Signal>,
    inner: Arc<HubInner>,
    payload: String,
    resyncs: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.inner.subscribers();
        // Under the map's lock, which every new subscription takes too: a count of one
        // (this receiver, dropped right after) means nobody else waits on the payload.
        if subscribers
            .get(&self.payload)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            subscribers.remove(&self.payload);
        }
    }
}

/// Why a [`Subscription`] woke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The payload was notified.
    Notified,
    /// The listening connection was re-established: notifications may have been missed,
    /// so re-read the state.
    Resync,
}

impl Subscription {
    /// The value carried by a notification of this payload (a granted entry's token), if
    /// one has arrived since the subscription was made.
    pub(crate) fn token(&self) -> Option<i64> {
        self.receiver.borrow().token
    }

    /// Waits for a notification that arrived after the subscription was made or after the
    /// previous call returned. Cancel-safe.
    ///
    /// # Errors
    /// [`Error::Connection`] if the backend (and so the hub) has been dropped.
    pub(crate) async fn changed(&mut self) -> Result<Wake> {
        self.receiver
            .changed()
            .await
            .map_err(|_| Error::connection(BACKEND, "the notification listener has stopped"))?;
        let resyncs = self.inner.resyncs.load(Ordering::SeqCst);
        if resyncs != self.resyncs {
            self.resyncs = resyncs;
            Ok(Wake::Resync)
        } else {
            Ok(Wake::Notified)
        }
    }
}

impl Wakes for Subscription {
    type Wake = Wake;

    /// [`Subscription::changed`]: cancel-safe.
    async fn next_wake(&mut self) -> Result<Wake> {
        self.changed().await
    }
}

impl Hub {
    /// The waiting of a blocking call (a barrier's or a latch's wait, a counter's
    /// `changed`, a queue consumer's place in line): subscribes to `payload` *before*
    /// the first look, then runs core's waiting loop
    /// ([`RetryPolicy::wait_woken`]) on that subscription, so each caller writes only
    /// its look. The subscription is made through transient failures; `what` names the
    /// wait in log lines; `lost` ends it with [`Error::SessionLost`].
    ///
    /// # Errors
    /// As [`RetryPolicy::wait_woken`].
    ///
    /// Cancel-safety: cancel-safe; the subscription ends with the future.
    pub(crate) async fn wait_until<T, F, Fut>(
        &self,
        payload: String,
        what: &'static str,
        lost: Option<&CancellationToken>,
        look: F,
    ) -> Result<T>
    where
        F: FnMut(Option<Wake>) -> Fut,
        Fut: Future<Output = Result<Look<T, Option<Duration>>>>,
    {
        let subscribing = || self.subscribe(payload.clone());
        let subscription = RetryPolicy::default().wait(what, lost, subscribing).await?;
        RetryPolicy::default()
            .wait_woken(what, lost, subscription, look)
            .await
    }

    /// A hub listening on `channel` through a connection of `pool`, started on the first
    /// subscription.
    pub(crate) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            inner: Arc::new(HubInner {
                pool,
                channel,
                subscribers: Mutex::new(HashMap::new()),
                resyncs: AtomicU64::new(0),
            }),
            task: OnceCell::new(),
        }
    }

    /// Subscribes to notifications with `payload`. When this returns, the channel is
    /// being listened to, so any change committed from now on wakes the subscription.
    pub(crate) async fn subscribe(&self, payload: String) -> Result<Subscription> {
        self.task
            .get_or_try_init(|| async {
                let listener = listen(&self.inner).await?;
                let task = tokio::spawn(run(Arc::clone(&self.inner), listener));
                Ok::<_, Error>(AbortOnDropHandle::new(task))
            })
            .await?;
        Ok(self.inner.register(payload))
    }
}

impl HubInner {
    /// A subscription to `payload`: one map entry looked up (or made), whatever the
    /// number of subscriptions.
    fn register(self: &Arc<Self>, payload: String) -> Subscription {
        let mut subscribers = self.subscribers();
        let receiver = subscribers
            .entry(payload.clone())
            .or_insert_with(|| watch::channel(Signal::default()).0)
            .subscribe();
        drop(subscribers);
        Subscription {
            receiver,
            resyncs: self.resyncs.load(Ordering::SeqCst),
            inner: Arc::clone(self),
            payload,
        }
    }

    fn subscribers(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Signal>>> {
        locked(&self.subscribers)
    }

    fn wake(&self, payload: &str) {
        let (key, token) = split_payload(payload);
        if let Some(sender) = self.subscribers().get(key) {
            sender.send_modify(|signal| {
                signal.count = signal.count.wrapping_add(1);
                signal.token = token.or(signal.token);
            });
        }
    }

    fn wake_all(&self) {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        for sender in self.subscribers().values() {
            sender.send_modify(|signal| signal.count = signal.count.wrapping_add(1));
        }
    }
}

async fn listen(inner: &HubInner) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(&inner.pool).await.map_err(map)?;
    listener.listen(&inner.channel).await.map_err(map)?;
    Ok(listener)
}

async fn run(inner: Arc<HubInner>, mut listener: PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => inner.wake(notification.payload()),
            // The connection was lost and has been re-established (listening again):
            // whatever was notified in between is gone, so everyone re-reads.
            // The listener is always reading, so it usually sees a restart of the
            // server first: the other connections of the process are tested before
            // use from now on (crate::connection::liveness), not handed out dead.
            Ok(None) => {
                tracing::warn!(channel = %inner.channel, "notification connection lost; reconnected");
                crate::connection::liveness::connection_failed();
                inner.wake_all();
            }
            Err(error) => {
                tracing::warn!(channel = %inner.channel, %error, "notification connection failed; reconnecting");
                crate::connection::liveness::connection_failed();
                inner.wake_all();
                let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
                listener = loop {
                    tokio::time::sleep(backoff.next_pause()).await;
                    match listen(&inner).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::debug!(%error, "reconnecting the notification listener failed");
                        }
                    }
                };
                inner.wake_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<HubInner> {
        let options = sqlx::postgres::PgConnectOptions::new().host("localhost");
        Arc::new(HubInner {
            pool: sqlx::postgres::PgPoolOptions::new().connect_lazy_with(options),
            channel: "distsync_test".into(),
            subscribers: Mutex::new(HashMap::new()),
            resyncs: AtomicU64::new(0),
        })
    }

    #[tokio::test]
    async fn dropped_subscriptions_leave_the_map_and_others_still_wake() {
        let hub = hub();
        let many: Vec<Subscription> = (0..10_000)
            .map(|i| hub.register(format!("m:{i}.1")))
            .collect();
        assert_eq!(hub.subscribers().len(), 10_000);
        let mut first = hub.register("s:7".into());
        let mut second = hub.register("s:7".into());
        assert_eq!(hub.subscribers().len(), 10_001, "one entry per payload");
        drop(many);
        assert_eq!(hub.subscribers().len(), 1, "dropped payloads are removed");
        drop(second);
        assert_eq!(hub.subscribers().len(), 1, "s:7 still has a subscriber");
        hub.wake("m:3.1");
        hub.wake("s:7");
        assert_eq!(first.changed().await.unwrap(), Wake::Notified);
        second = hub.register("s:7".into());
        hub.wake_all();
        assert_eq!(first.changed().await.unwrap(), Wake::Resync);
        assert_eq!(second.changed().await.unwrap(), Wake::Resync);
        drop((first, second));
        assert!(hub.subscribers().is_empty());
    }

    #[tokio::test]
    async fn a_wake_reaches_only_its_payload() {
        let hub = hub();
        let mut a = hub.register("m:1.1".into());
        let mut b = hub.register("m:2.1".into());
        hub.wake("m:2.1");
        assert_eq!(b.changed().await.unwrap(), Wake::Notified);
        assert!(
            !a.receiver.has_changed().unwrap(),
            "a notification for m:2.1 woke m:1.1"
        );
        hub.wake("m:1.1");
        assert_eq!(a.changed().await.unwrap(), Wake::Notified);
    }

    #[test]
    fn payloads_split_into_key_and_token() {
        assert_eq!(split_payload("m:7.9:42"), ("m:7.9", Some(42)));
        assert_eq!(split_payload("m:7.9"), ("m:7.9", None));
        assert_eq!(split_payload("m:7.9:x"), ("m:7.9:x", None));
        assert_eq!(split_payload("q:a:b"), ("q:a:b", None));
        assert_eq!(split_payload("M:3"), ("M:3", None));
    }

    #[tokio::test]
    async fn a_carried_token_reaches_its_subscriber_and_stays() {
        let hub = hub();
        let mut a = hub.register("m:1.2".into());
        let mut other = hub.register("m:1.3".into());
        assert_eq!(a.token(), None);
        hub.wake("m:1.2:17");
        assert_eq!(a.changed().await.unwrap(), Wake::Notified);
        assert_eq!(a.token(), Some(17));
        assert!(
            !other.receiver.has_changed().unwrap(),
            "a token for m:1.2 woke m:1.3"
        );
        assert_eq!(other.token(), None);
        // A later wake-up without a value (a re-check request) keeps the token.
        hub.wake("m:1.2");
        assert_eq!(a.changed().await.unwrap(), Wake::Notified);
        assert_eq!(a.token(), Some(17));
        hub.wake("m:1.3");
        assert_eq!(other.changed().await.unwrap(), Wake::Notified);
        assert_eq!(other.token(), None);
    }
}
