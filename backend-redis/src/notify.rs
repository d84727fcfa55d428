//! Wake-ups over Redis pub/sub: one dedicated connection per backend, shared by every
//! waiter of the process.
//!
//! `Notifier::subscribe` returns once the server has confirmed the SUBSCRIBE, so
//! every message published afterwards is delivered; what was published before is not.
//! A waiter therefore reads the state it waits on *after* its subscription is
//! confirmed: either it subscribes before the script that enqueues it runs (queues),
//! or it runs that script first and re-checks once subscribed (waiter lines, see
//! [`crate::waiter_line`], so that an uncontended acquisition needs no subscription at all).
//! When the pub/sub connection
//! breaks, messages may have been missed: after reconnecting and re-subscribing, every
//! subscriber receives a resync event and re-reads the state it waits on. The
//! connection is pinged every 15 s so that a silently dead connection is
//! noticed too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use distsync_core::raw::retry::WaitRetry;
use distsync_core::raw::{locked, Wakes};
use distsync_core::{Error, Result};
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use crate::capabilities::BACKEND;
use crate::error::redis_error;
use crate::target::Target;

/// How often the pub/sub connection is pinged.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a subscription receives.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message published on the channel.
    Message(Vec<u8>),
    /// The connection was re-established: messages may have been missed, re-read.
    Resync,
}

type Senders = HashMap<String, HashMap<u64, mpsc::UnboundedSender<Event>>>;

#[derive(Default)]
struct Registry {
    subscribers: Mutex<Senders>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Senders> {
        locked(&self.subscribers)
    }

    fn channels(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn has(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    fn dispatch(&self, channel: &str, event: impl Fn() -> Event) {
        if let Some(senders) = self.lock().get(channel) {
            for sender in senders.values() {
                let _ = sender.send(event());
            }
        }
    }

    fn resync_all(&self) {
        for sender in self.lock().values().flat_map(HashMap::values) {
            let _ = sender.send(Event::Resync);
        }
    }
}

enum Command {
    Subscribe {
        channel: String,
        done: oneshot::Sender<Result<()>>,
    },
    Unsubscribe {
        channel: String,
    },
}

/// The handle to the pub/sub connection task.
pub(crate) struct Notifier {
    registry: Arc<Registry>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Notifier {
    /// Starts the connection task (it connects lazily, on the first subscription).
    /// Must be called within a tokio runtime. The task ends when the notifier and
    /// every subscription are dropped.
    /// Each connection attempt (TCP, TLS, login, re-subscription) may take up to
    /// `connect_timeout`.
    /// Under Sentinel, each connection goes to the primary the Sentinels name then.
    pub(crate) fn start(target: Target, connect_timeout: Duration) -> Self {
        let registry = Arc::new(Registry::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(
            target,
            connect_timeout,
            Arc::clone(&registry),
            receiver,
        ));
        Self { registry, commands }
    }

    /// Subscribes to `channel` and returns once the server has confirmed it: every
    /// message published afterwards is delivered.
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves no subscription behind.
    pub(crate) async fn subscribe(&self, channel: String) -> Result<Subscription> {
        let (sender, events) = mpsc::unbounded_channel();
        let id = self.registry.next.fetch_add(1, Ordering::Relaxed);
        self.registry
            .lock()
            .entry(channel.clone())
            .or_default()
            .insert(id, sender);
        let subscription = Subscription {
            channel: channel.clone(),
            id,
            events,
            registry: Arc::clone(&self.registry),
            commands: self.commands.clone(),
        };
        let (done, confirmed) = oneshot::channel();
        self.commands
            .send(Command::Subscribe { channel, done })
            .map_err(|_| stopped())?;
        confirmed.await.map_err(|_| stopped())??;
        Ok(subscription)
    }

    /// [`Notifier::subscribe`] for a wait: a store that cannot be reached is waited
    /// out with `retry`'s pauses, as the wait's own store calls are, so a wait that
    /// starts during an outage does not fail where one already waiting rides it out
    /// (see `distsync_core::raw::retry`). Errors that are not transient are returned.
    ///
    /// Cancel-safety: cancel-safe, as [`Notifier::subscribe`].
    pub(crate) async fn subscribe_waiting(
        &self,
        channel: String,
        retry: &mut WaitRetry,
    ) -> Result<Subscription> {
        loop {
            match self.subscribe(channel.clone()).await {
                Ok(subscription) => return Ok(subscription),
                Err(error) => match retry.failed(&error) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(error),
                },
            }
        }
    }
}

fn stopped() -> Error {
    Error::connection(BACKEND, "the pub/sub connection task has stopped")
}

/// One subscriber of one channel; unsubscribes when dropped.
pub(crate) struct Subscription {
    channel: String,
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
    registry: Arc<Registry>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The next event.
    ///
    /// # Errors
    /// [`Error::Connection`] if the connection task has stopped.
    ///
    /// Cancel-safety: cancel-safe; an event is never lost by dropping the future.
    pub(crate) async fn recv(&mut self) -> Result<Event> {
        self.events.recv().await.ok_or_else(stopped)
    }

    /// Discards events already delivered (they are superseded by a fresh read);
    /// returns whether a message was among them.
    pub(crate) fn drain(&mut self) -> bool {
        let mut message = false;
        while let Ok(event) = self.events.try_recv() {
            message |= matches!(event, Event::Message(_));
        }
        message
    }
}

impl Wakes for Subscription {
    /// Whether a message came (a resubscription alone is `false`); the wake-ups
    /// delivered by then are superseded by the look that follows.
    type Wake = bool;

    /// Cancel-safe: an event is never lost by dropping the future.
    async fn next_wake(&mut self) -> Result<bool> {
        let message = matches!(self.recv().await?, Event::Message(_));
        Ok(self.drain() || message)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.registry.lock();
        let Some(senders) = subscribers.get_mut(&self.channel) else {
            return;
        };
        senders.remove(&self.id);
        if senders.is_empty() {
            subscribers.remove(&self.channel);
            drop(subscribers);
            let _ = self.commands.send(Command::Unsubscribe {
                channel: std::mem::take(&mut self.channel),
            });
        }
    }
}

/// The connection task: connects, (re)subscribes, dispatches messages, reconnects.
async fn run(
    target: Target,
    connect_timeout: Duration,
    registry: Arc<Registry>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = MIN_BACKOFF;
    // Confirmations owed to subscribers whose SUBSCRIBE met a broken connection; the
    // re-subscription after reconnecting covers their channel.
    let mut owed: Vec<oneshot::Sender<Result<()>>> = Vec::new();
    let mut connected_before = false;
    loop {
        // Connect only when someone listens: an idle backend keeps no connection.
        if !connected_before && owed.is_empty() {
            match commands.recv().await {
                None => return,
                Some(Command::Subscribe { done, .. }) => owed.push(done),
                Some(Command::Unsubscribe { .. }) => continue,
            }
        }
        let (mut sink, mut stream, mut subscribed) =
            match connect(&target, connect_timeout, &registry).await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "redis pub/sub connection failed; retrying");
                    for done in owed.drain(..) {
                        let _ = done.send(Err(redis_error(error.clone())));
                    }
                    let pause = tokio::time::sleep(backoff);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            command = commands.recv() => match command {
                                None => return,
                                Some(Command::Subscribe { done, .. }) => {
                                    let _ = done.send(Err(redis_error(error.clone())));
                                }
                                Some(Command::Unsubscribe { .. }) => {}
                            },
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
        backoff = MIN_BACKOFF;
        for done in owed.drain(..) {
            let _ = done.send(Ok(()));
        }
        if connected_before {
            tracing::debug!("redis pub/sub reconnected; subscribers re-read");
            registry.resync_all();
        }
        connected_before = true;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe { channel, done }) => {
                        if subscribed.contains(&channel) {
                            let _ = done.send(Ok(()));
                        } else if let Err(error) = sink.subscribe(&channel).await {
                            tracing::debug!(%error, "redis SUBSCRIBE failed; reconnecting");
                            owed.push(done);
                            break;
                        } else {
                            subscribed.insert(channel);
                            let _ = done.send(Ok(()));
                        }
                    }
                    Some(Command::Unsubscribe { channel }) => {
                        if !registry.has(&channel) && subscribed.remove(&channel) {
                            if let Err(error) = sink.unsubscribe(&channel).await {
                                tracing::debug!(%error, "redis UNSUBSCRIBE failed; reconnecting");
                                break;
                            }
                        }
                    }
                },
                message = stream.next() => match message {
                    Some(message) => {
                        let payload = message.get_payload_bytes().to_vec();
                        registry.dispatch(message.get_channel_name(), || Event::Message(payload.clone()));
                    }
                    None => {
                        tracing::debug!("redis pub/sub connection closed; reconnecting");
                        break;
                    }
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::debug!("redis pub/sub ping failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

async fn connect(
    target: &Target,
    connect_timeout: Duration,
    registry: &Registry,
) -> redis::RedisResult<(PubSubSink, PubSubStream, HashSet<String>)> {
    let attempt = async {
        let client = target.client().await?;
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        let channels = registry.channels();
        if !channels.is_empty() {
            sink.subscribe(&channels).await?;
        }
        Ok((sink, stream, channels.into_iter().collect()))
    };
    // A server that accepts the connection but never answers must not hold every
    // waiter forever.
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the pub/sub connection got no answer within {connect_timeout:?}"),
            )))
        })
}
