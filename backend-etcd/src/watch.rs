//! Watches: every watch of one [`EtcdKv`](crate::EtcdKv) (and its clones) is carried
//! by one shared gRPC watch stream, as etcd allows many watch ids per stream.
//!
//! A background task owns the stream. `open` hands it a create request; the task sends
//! it, and routes etcd's answers: `created` answers come back in the order the creates
//! were sent, so the task pairs each with the oldest create still waiting; every later
//! answer carries its watch id and goes to that watch's channel. Dropping a watch's
//! stream asks the task to cancel its id on the server. When the shared stream breaks,
//! the task ends: every watch stream then ends (callers re-read and watch again) and
//! the next `open` starts a new shared stream, which the client may place on another
//! member.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use distsync_core::Result;
use distsync_kv::kv::{EventKind, Revision, WatchEvent, WatchResponse};
use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::{classify, protocol, to_error, BACKEND};
use crate::key_value::key_value;
use distsync_core::raw::{Idempotence, RetryPolicy};

/// The shared watch stream of one client, opened on first use and again after it
/// breaks.
pub(crate) struct Watches {
    client: etcd_client::Client,
    /// Names each watch on the client side, before etcd has given it an id.
    next_local: AtomicU64,
    /// Commands to the task owning the current shared stream; closed once it ended.
    shared: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

/// What the task owning the shared stream is asked to do.
enum Command {
    /// Create a watch: send the request, and once etcd answers, route its events to
    /// `events` and say so on `reply`.
    Create {
        local: u64,
        key: String,
        options: WatchOptions,
        events: mpsc::UnboundedSender<WatchResponse>,
        reply: oneshot::Sender<Created>,
    },
    /// The watch named `local` is no longer wanted: cancel it on the server (once it is
    /// created, if it is not yet).
    Cancel { local: u64 },
}

/// etcd's answer to a create: `Ok` or its reason for refusing.
type Created = std::result::Result<(), String>;

impl Watches {
    /// No stream is opened until the first watch.
    pub(crate) fn new(client: etcd_client::Client) -> Self {
        Self {
            client,
            next_local: AtomicU64::new(0),
            shared: Mutex::new(None),
        }
    }

    /// Opens a watch on `key` (a prefix when `prefix`) from `start_revision` and waits
    /// until etcd has created it, so that a watch etcd refuses is an error here rather
    /// than an empty stream.
    ///
    /// The stream yields events in revision order, [`WatchResponse::Compacted`] (then
    /// ends) when `start_revision` was compacted away, and ends without an item when
    /// etcd cancels the watch or the shared stream breaks (connection lost, member
    /// down): callers re-read and watch again, which opens a new shared stream. Dropping
    /// the stream cancels the watch on the server. Events are buffered without bound
    /// for a stream that is not read (the shared stream must not wait for one watch).
    ///
    /// Cancel-safe: dropping the future part-way cancels a watch already created.
    pub(crate) async fn open(
        &self,
        retry: &RetryPolicy,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        let mut options = WatchOptions::new().with_start_revision(start_revision);
        if prefix {
            options = options.with_prefix();
        }
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        let (created, events) = retry
            .one_shot("watch", Idempotence::Idempotent, classify, || {
                let options = options.clone();
                async move {
                    let (events_tx, events_rx) = mpsc::unbounded_channel();
                    let (reply, answer) = oneshot::channel();
                    let command = Command::Create {
                        local,
                        key: key.to_owned(),
                        options,
                        events: events_tx,
                        reply,
                    };
                    let registration = Registration {
                        local,
                        commands: self.submit(command).await?,
                    };
                    match answer.await {
                        Ok(created) => Ok((created.map(|()| registration), events_rx)),
                        Err(_) => Err(etcd_client::Error::WatchError(
                            "the watch stream closed before the watch was created".into(),
                        )),
                    }
                }
            })
            .await
            .map_err(to_error)?;
        let registration =
            created.map_err(|reason| protocol(format!("etcd refused the watch: {reason}")))?;
        Ok(stream::unfold(
            (events, registration),
            |(mut events, registration)| async move {
                let item = events.recv().await?;
                Some((Ok(item), (events, registration)))
            },
        )
        .boxed())
    }

    /// Hands `command` (a create) to the shared stream's task, opening a new shared
    /// stream when there is none or it has ended; returns the task's command channel.
    async fn submit(
        &self,
        command: Command,
    ) -> std::result::Result<mpsc::UnboundedSender<Command>, etcd_client::Error> {
        let mut shared = self.shared.lock().await;
        let command = match shared.as_ref() {
            Some(commands) => match commands.send(command) {
                Ok(()) => return Ok(commands.clone()),
                // The task has ended: its stream broke.
                Err(mpsc::error::SendError(command)) => command,
            },
            None => command,
        };
        *shared = None;
        let commands = open_shared(&self.client, command).await?;
        *shared = Some(commands.clone());
        Ok(commands)
    }
}

/// Opens a shared stream whose first request is `first` (a create) and starts the task
/// that owns it.
async fn open_shared(
    client: &etcd_client::Client,
    first: Command,
) -> std::result::Result<mpsc::UnboundedSender<Command>, etcd_client::Error> {
    let Command::Create {
        local,
        key,
        options,
        events,
        reply,
    } = first
    else {
        return Err(etcd_client::Error::WatchError(
            "a shared watch stream opens with a create".into(),
        ));
    };
    let (requests, responses) = client
        .watch_client()
        .watch(key, Some(options))
        .await?
        .split();
    tracing::debug!(backend = BACKEND, "opened a shared watch stream");
    let (commands, receiver) = mpsc::unbounded_channel();
    let router = Router {
        requests,
        pending: VecDeque::from([Pending {
            local,
            events,
            reply,
            abandoned: false,
        }]),
        active: HashMap::new(),
        by_local: HashMap::new(),
    };
    tokio::spawn(router.run(receiver, responses));
    Ok(commands)
}

/// A created (or being created) watch; dropping it asks the task to cancel the watch.
struct Registration {
    local: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Fails only when the task has ended, and the watch with it.
        let _ = self.commands.send(Command::Cancel { local: self.local });
    }
}

/// A create sent to etcd, not answered yet.
struct Pending {
    local: u64,
    events: mpsc::UnboundedSender<WatchResponse>,
    reply: oneshot::Sender<Created>,
    /// Cancelled before etcd created it: cancel it as soon as it has an id.
    abandoned: bool,
}

/// A watch etcd created.
struct Active {
    local: u64,
    events: mpsc::UnboundedSender<WatchResponse>,
}

/// The task owning a shared stream.
struct Router {
    requests: WatchRequestSender,
    /// Creates sent, in the order sent (which is the order etcd answers them in).
    pending: VecDeque<Pending>,
    /// Created watches by etcd's watch id.
    active: HashMap<i64, Active>,
    /// etcd's watch id of each created watch, by its client-side name.
    by_local: HashMap<u64, i64>,
}

/// Why the shared stream is given up.
struct Broken;

impl Router {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut responses: WatchResponseStream,
    ) {
        loop {
            let step = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    // Every client and watch is gone.
                    None => Err(Broken),
                },
                message = responses.next() => match message {
                    Some(Ok(response)) => self.route(&response).await,
                    Some(Err(error)) => {
                        tracing::debug!(backend = BACKEND, %error, "shared watch stream broke");
                        Err(Broken)
                    }
                    None => {
                        tracing::debug!(backend = BACKEND, "shared watch stream closed by the server");
                        Err(Broken)
                    }
                },
            };
            if step.is_err() {
                break;
            }
        }
        // Refuse new commands before the waiting creates learn that the stream is gone,
        // so that their retry opens a new stream. Dropping `self` then ends every
        // watch's stream.
        commands.close();
        drop(self);
    }

    async fn command(&mut self, command: Command) -> std::result::Result<(), Broken> {
        match command {
            Command::Create {
                local,
                key,
                options,
                events,
                reply,
            } => {
                self.pending.push_back(Pending {
                    local,
                    events,
                    reply,
                    abandoned: false,
                });
                sent_or_broken(self.requests.watch(key, Some(options)).await)
            }
            Command::Cancel { local } => {
                if let Some(pending) = self.pending.iter_mut().find(|p| p.local == local) {
                    pending.abandoned = true;
                    return Ok(());
                }
                let Some(id) = self.by_local.remove(&local) else {
                    return Ok(());
                };
                self.active.remove(&id);
                self.cancel(id).await
            }
        }
    }

    async fn route(
        &mut self,
        response: &etcd_client::WatchResponse,
    ) -> std::result::Result<(), Broken> {
        if response.created() {
            let Some(pending) = self.pending.pop_front() else {
                tracing::warn!(
                    backend = BACKEND,
                    id = response.watch_id(),
                    "etcd created a watch that was not asked for"
                );
                return self.cancel_created(response).await;
            };
            if response.canceled() || response.watch_id() < 0 {
                // Refused; the caller may be gone, which is fine.
                let _ = pending.reply.send(Err(response.cancel_reason().to_owned()));
                return Ok(());
            }
            if pending.abandoned
                || pending.events.is_closed()
                || pending.reply.send(Ok(())).is_err()
            {
                return self.cancel_created(response).await;
            }
            let id = response.watch_id();
            self.by_local.insert(pending.local, id);
            self.active.insert(
                id,
                Active {
                    local: pending.local,
                    events: pending.events,
                },
            );
            // A created answer carries no events; should one, they are delivered below.
        }
        let id = response.watch_id();
        let Some(active) = self.active.get(&id) else {
            // An answer to a cancel, or for a watch already cancelled.
            return Ok(());
        };
        let (item, ends) = translate(response);
        let delivered = item.is_none_or(|item| active.events.send(item).is_ok());
        if ends {
            // etcd has cancelled the watch already; dropping the sender ends the stream.
            self.remove(id);
            Ok(())
        } else if !delivered {
            // Its stream was dropped and the cancel is on its way; do not wait for it.
            self.remove(id);
            self.cancel(id).await
        } else {
            Ok(())
        }
    }

    fn remove(&mut self, id: i64) {
        if let Some(active) = self.active.remove(&id) {
            self.by_local.remove(&active.local);
        }
    }

    async fn cancel_created(
        &mut self,
        response: &etcd_client::WatchResponse,
    ) -> std::result::Result<(), Broken> {
        if response.canceled() || response.watch_id() < 0 {
            return Ok(());
        }
        self.cancel(response.watch_id()).await
    }

    async fn cancel(&mut self, id: i64) -> std::result::Result<(), Broken> {
        sent_or_broken(self.requests.cancel(id).await)
    }
}

/// A request that could not be sent means the shared stream is gone.
fn sent_or_broken(
    sent: std::result::Result<(), etcd_client::Error>,
) -> std::result::Result<(), Broken> {
    sent.map_err(|error| {
        tracing::debug!(backend = BACKEND, %error, "shared watch stream refused a request");
        Broken
    })
}

/// What a message means for its watch: the item to deliver, if any, and whether the
/// watch ends with it (etcd has cancelled it, or it reports a compaction).
fn translate(response: &etcd_client::WatchResponse) -> (Option<WatchResponse>, bool) {
    if response.compact_revision() > 0 {
        // etcd sets `canceled` with a compact revision; should it not, the watch is
        // dead all the same.
        return (
            Some(WatchResponse::Compacted(response.compact_revision())),
            true,
        );
    }
    if response.canceled() {
        tracing::debug!(
            backend = BACKEND,
            reason = response.cancel_reason(),
            "etcd cancelled the watch"
        );
        return (None, true);
    }
    let events: Vec<WatchEvent> = response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            };
            Some(WatchEvent {
                kind,
                kv: key_value(kv),
            })
        })
        .collect();
    // Progress notifications, created answers and the like carry no events.
    (
        (!events.is_empty()).then_some(WatchResponse::Events(events)),
        false,
    )
}
