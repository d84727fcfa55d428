//! Lease renewals: every renewal of one [`EtcdKv`](crate::EtcdKv) (and its clones) is
//! carried by one shared gRPC `LeaseKeepAlive` stream, as Go's `clientv3` carries every
//! lease of a client on one stream, instead of a stream opened and ended per renewal.
//!
//! etcd-client's `LeaseKeeper` sends the lease id it holds on the stream it opened; its
//! `pub-response-field` feature makes that id public, so the stream's owner sets it
//! before each send and one stream renews any lease. Opening goes through etcd-client
//! (`LeaseClient::keep_alive`), which keeps everything the client does for its other
//! calls: the members' balancing, TLS, the auth token (refreshed when etcd refuses it)
//! and the `hasleader` requirement.
//!
//! The first renewal after the stream is gone opens a new one (the open sends it and
//! reads its answer). Every later renewal is a waiter queued under its lease id and the
//! id handed to the task that owns the stream; etcd answers each request with the id it
//! renewed (TTL 0 when the lease is gone), in the order it received them, so the task
//! pairs each answer with the oldest waiter of that id. When the stream breaks (the
//! connection is lost, the member ends it), every waiter fails with that error and the
//! next renewal opens a new stream, which the client may place on another member. A
//! renewal unanswered within the request timeout discards the stream too (a member
//! that stopped answering, a lost reply), so that a dead stream cannot swallow the
//! renewals after it. The task ends with the last handle of the client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::raw::locked;
use distsync_core::KeepAlive;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use crate::error::{is_lease_not_found, BACKEND};

/// What one renewal attempt returns: etcd's answer, or why there is none.
type Renewal = std::result::Result<KeepAlive, etcd_client::Error>;

/// The answer a waiter receives from the stream's task (a [`Status`], which is
/// `Clone`, fails every waiter of a broken stream alike).
type Answer = std::result::Result<KeepAlive, Status>;

/// The shared keepalive stream of one client, opened on first use and again after it
/// breaks or is discarded.
pub(crate) struct KeepAlives {
    client: Client,
    /// How long a renewal (the stream's open included) may wait for its answer.
    timeout: Duration,
    /// The current stream, if one is open.
    current: Mutex<Option<Arc<Shared>>>,
    /// Held while a stream is opened, so that renewals arriving meanwhile wait for it
    /// instead of opening streams of their own.
    opening: tokio::sync::Mutex<()>,
}

/// One open stream, as its callers see it. Dropping the last handle ends its task.
struct Shared {
    /// Lease ids to send, to the task (unbounded: handing one over neither waits nor
    /// can be cancelled half-way, so a waiter queued always has its request sent).
    ids: mpsc::UnboundedSender<i64>,
    waiting: Arc<Mutex<Waiting>>,
    /// Cancelled to discard the stream; the guard cancels it with the last handle.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

/// Renewals sent and not answered yet.
#[derive(Default)]
struct Waiting {
    /// The task has ended: nothing more is sent or answered on this stream.
    closed: bool,
    /// By lease id, oldest first.
    by_lease: HashMap<i64, VecDeque<oneshot::Sender<Answer>>>,
}

impl KeepAlives {
    /// No stream is opened until the first renewal. `timeout` bounds each renewal.
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Renews `lease` once: [`KeepAlive::Renewed`], [`KeepAlive::Gone`] when etcd
    /// answers that the lease does not exist (expired or revoked), or the error that
    /// kept the answer away (the stream broke, or no answer came within the timeout:
    /// a `DeadlineExceeded` status), which the caller's retry policy classifies.
    ///
    /// Cancel-safe: a renewal dropped part-way has at most sent its request, whose
    /// answer the stream's task then drops.
    pub(crate) async fn renew(&self, lease: i64) -> Renewal {
        let mut used = None;
        let outcome = tokio::time::timeout(self.timeout, self.attempt(lease, &mut used)).await;
        outcome.unwrap_or_else(|_| {
            if let Some(shared) = used {
                tracing::debug!(
                    backend = BACKEND,
                    lease = format_args!("{lease:x}"),
                    "keepalive unanswered within the request timeout; discarding its stream"
                );
                shared.stop.cancel();
            }
            Err(etcd_client::Error::GRpcStatus(Status::deadline_exceeded(
                format!(
                    "no keepalive answer within the request timeout ({:?})",
                    self.timeout
                ),
            )))
        })
    }

    /// One renewal on the current stream, or on a new one; `used` is the stream it
    /// waits on, for [`KeepAlives::renew`] to discard on a timeout.
    async fn attempt(&self, lease: i64, used: &mut Option<Arc<Shared>>) -> Renewal {
        if let Some((shared, answer)) = self.enqueue_current(lease) {
            *used = Some(shared);
            return receive(answer).await;
        }
        let opening = self.opening.lock().await;
        // Another renewal may have opened one while this one waited.
        if let Some((shared, answer)) = self.enqueue_current(lease) {
            *used = Some(shared);
            drop(opening);
            return receive(answer).await;
        }
        let (keeper, responses) = match self.client.lease_client().keep_alive(lease).await {
            Ok(opened) => opened,
            // The opening renewal was answered with TTL 0.
            Err(error) if is_lease_not_found(&error) => return Ok(KeepAlive::Gone),
            Err(error) => return Err(error),
        };
        tracing::debug!(backend = BACKEND, "opened a shared keepalive stream");
        let (ids, receiver) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let stop = CancellationToken::new();
        tokio::spawn(run(
            keeper,
            responses,
            receiver,
            Arc::clone(&waiting),
            stop.clone(),
        ));
        *locked(&self.current) = Some(Arc::new(Shared {
            ids,
            waiting,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }));
        Ok(KeepAlive::Renewed)
    }

    /// Queues a renewal of `lease` on the current stream, if one is open.
    fn enqueue_current(&self, lease: i64) -> Option<(Arc<Shared>, oneshot::Receiver<Answer>)> {
        let mut current = locked(&self.current);
        let shared = current.as_ref()?;
        match shared.enqueue(lease) {
            Some(answer) => Some((Arc::clone(shared), answer)),
            None => {
                // Its task has ended; the next renewal opens a new stream.
                *current = None;
                None
            }
        }
    }
}

impl Shared {
    /// Queues a waiter for `lease` and hands the id to the task, both under the lock
    /// the task takes to fail every waiter, so that no waiter is left behind by a task
    /// that ends. `None` when the task has ended (or is being discarded).
    fn enqueue(&self, lease: i64) -> Option<oneshot::Receiver<Answer>> {
        if self.stop.is_cancelled() {
            return None;
        }
        let mut waiting = locked(&self.waiting);
        if waiting.closed || self.ids.send(lease).is_err() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        waiting.by_lease.entry(lease).or_default().push_back(reply);
        Some(answer)
    }
}

/// A waiter's answer, as one renewal attempt's outcome.
async fn receive(answer: oneshot::Receiver<Answer>) -> Renewal {
    match answer.await {
        Ok(answer) => answer.map_err(etcd_client::Error::GRpcStatus),
        Err(_) => Err(etcd_client::Error::LeaseKeepAliveError(
            "the keepalive stream ended before answering".into(),
        )),
    }
}

/// Why the waiters left on a discarded stream fail.
const DISCARDED: &str =
    "the keepalive stream was given up (a renewal on it went unanswered, or its client is gone)";

/// The task owning one stream: sends the ids handed to it and routes etcd's answers to
/// their waiters, until the stream breaks, it is discarded, or every handle is gone;
/// then fails every waiter left.
async fn run(
    mut keeper: LeaseKeeper,
    mut responses: LeaseKeepAliveStream,
    mut ids: mpsc::UnboundedReceiver<i64>,
    waiting: Arc<Mutex<Waiting>>,
    stop: CancellationToken,
) {
    let send = async {
        while let Some(lease) = ids.recv().await {
            keeper.id = lease;
            if let Err(error) = keeper.keep_alive().await {
                return Status::unavailable(format!(
                    "the keepalive stream refused a request: {error}"
                ));
            }
        }
        Status::cancelled("the etcd client is gone")
    };
    let receive = async {
        loop {
            match responses.message().await {
                Ok(Some(response)) => route(&waiting, response.id(), response.ttl()),
                Ok(None) => return Status::unavailable("etcd closed the keepalive stream"),
                Err(etcd_client::Error::GRpcStatus(status)) => return status,
                Err(error) => {
                    return Status::unavailable(format!("the keepalive stream broke: {error}"))
                }
            }
        }
    };
    let status = tokio::select! {
        () = stop.cancelled() => Status::deadline_exceeded(DISCARDED),
        status = send => status,
        status = receive => status,
    };
    tracing::debug!(backend = BACKEND, %status, "shared keepalive stream ended");
    let left = {
        let mut waiting = locked(&waiting);
        waiting.closed = true;
        std::mem::take(&mut waiting.by_lease)
    };
    for reply in left.into_values().flatten() {
        // The renewal may have been dropped meanwhile.
        let _ = reply.send(Err(status.clone()));
    }
}

/// Hands etcd's answer for `lease` to its oldest waiter: renewed when `ttl` is above
/// zero, gone otherwise.
fn route(waiting: &Mutex<Waiting>, lease: i64, ttl: i64) {
    let reply = {
        let mut waiting = locked(waiting);
        let Some(queue) = waiting.by_lease.get_mut(&lease) else {
            tracing::debug!(
                backend = BACKEND,
                lease = format_args!("{lease:x}"),
                "keepalive answer for no renewal"
            );
            return;
        };
        let reply = queue.pop_front();
        if queue.is_empty() {
            waiting.by_lease.remove(&lease);
        }
        reply
    };
    let outcome = if ttl > 0 {
        KeepAlive::Renewed
    } else {
        KeepAlive::Gone
    };
    if let Some(reply) = reply {
        // The renewal may have been dropped meanwhile.
        let _ = reply.send(Ok(outcome));
    }
}
