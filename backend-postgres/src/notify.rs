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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::{Error, Result};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, OnceCell};
use tokio::task::AbortHandle;

use crate::error::{map, BACKEND};

/// The notification hub of one backend.
pub(crate) struct Hub {
    inner: Arc<HubInner>,
    task: OnceCell<AbortOnDrop>,
}

struct HubInner {
    pool: PgPool,
    channel: String,
    subscribers: Mutex<HashMap<String, watch::Sender<u64>>>,
    resyncs: AtomicU64,
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A waiter's interest in one payload.
pub(crate) struct Subscription {
    receiver: watch::Receiver<u64>,
    inner: Arc<HubInner>,
    resyncs: u64,
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

impl Hub {
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
                Ok::<_, Error>(AbortOnDrop(task.abort_handle()))
            })
            .await?;
        let mut subscribers = self.inner.subscribers();
        if subscribers.len() >= 256 {
            subscribers.retain(|_, sender| sender.receiver_count() > 0);
        }
        let receiver = subscribers
            .entry(payload)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        drop(subscribers);
        Ok(Subscription {
            receiver,
            resyncs: self.inner.resyncs.load(Ordering::SeqCst),
            inner: Arc::clone(&self.inner),
        })
    }
}

impl HubInner {
    fn subscribers(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self, payload: &str) {
        if let Some(sender) = self.subscribers().get(payload) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        for sender in self.subscribers().values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
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
            Ok(None) => {
                tracing::warn!(channel = %inner.channel, "notification connection lost; reconnected");
                inner.wake_all();
            }
            Err(error) => {
                tracing::warn!(channel = %inner.channel, %error, "notification connection failed; reconnecting");
                inner.wake_all();
                let mut backoff = Duration::from_millis(50);
                listener = loop {
                    tokio::time::sleep(backoff).await;
                    match listen(&inner).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::debug!(%error, "reconnecting the notification listener failed");
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                };
                inner.wake_all();
            }
        }
    }
}
