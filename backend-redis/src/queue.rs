//! The durable queue: one sorted set per queue, FIFO within a priority.
//!
//! Under `p = {<ns><name>}:queue`, items live in the sorted set `p:items`, scored by
//! priority, each member being 16 hex digits of an arrival counter followed by the
//! item: the lowest priority number pops first and, within a priority, the earliest
//! arrival (members of equal score sort bytewise). A plain `enqueue` is priority 0, so
//! a queue used only with it is FIFO.
//!
//! A dequeue never loses an item to cancellation. Each call has an id; the pop script
//! moves the item into the hash `p:inflight` under that id, and the item is returned
//! at once, with the acknowledgement (deleting the in-flight record) sent in the
//! background afterwards. If the call is dropped before it returns (even while the
//! pop's reply is on the wire), its clean-up script puts any in-flight item back at
//! its place, on the same connection, after the pop. A retried call id returns the
//! item it already popped, so a lost reply cannot pop twice.
//!
//! Blocking consumers wait on their own pub/sub channel and register in `p:waiters`
//! (with a marker key `p:wm:<id>` of [`WAITER_TTL`]); each enqueue wakes exactly one
//! live waiter, the longest waiting, and a consumer that pops while items remain
//! wakes the next one, so a wake-up lost with a crashed consumer is passed on. As a
//! safety net, a waiting consumer re-registers every two thirds of [`WAITER_TTL`].
//!
//! A consumer *process* that crashes between the pop and the acknowledgement leaves
//! its item in `p:inflight`, neither lost nor delivered twice; an operator can move
//! it back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::{Name, Queue, Result};

use crate::backend::Shared;
use crate::background::spawn_retrying;
use crate::error::{array, bytes, int, unexpected};
use crate::keys::Kind;
use crate::retry::Backoff;
use crate::scripts::SCRIPTS;

/// How long a waiting consumer's registration lasts without renewal.
pub const WAITER_TTL: Duration = Duration::from_secs(30);

/// A Redis queue.
pub(crate) struct RedisQueue {
    shared: Arc<Shared>,
    name: Name,
    prefix: String,
}

impl RedisQueue {
    pub(crate) fn new(shared: &Arc<Shared>, name: Name) -> Self {
        Self {
            prefix: shared.keys.primitive(&name, Kind::Queue),
            shared: Arc::clone(shared),
            name,
        }
    }

    /// One pop attempt of call `id`; `wait` registers the call as a waiter when empty.
    async fn pop(&self, id: &str, wait: bool) -> Result<Option<Bytes>> {
        let mut call = self.shared.script(&SCRIPTS.queue_pop);
        call.arg(&self.prefix)
            .arg(id)
            .arg(if wait { "wait" } else { "try" })
            .arg(u64::try_from(WAITER_TTL.as_millis()).unwrap_or(u64::MAX));
        let reply = self.shared.eval(&call).await?;
        let mut fields = array("queue_pop", reply.clone())?.into_iter();
        match fields
            .next()
            .map(|flag| int("queue_pop", &flag))
            .transpose()?
        {
            Some(1) => {
                let item = fields
                    .next()
                    .map(|item| bytes("queue_pop", item))
                    .transpose()?
                    .flatten()
                    .unwrap_or_default();
                Ok(Some(Bytes::from(item)))
            }
            Some(0) => Ok(None),
            _ => Err(unexpected("queue_pop", &reply)),
        }
    }
}

/// The clean-up of a dequeue call: dropped armed, it puts back what the call may
/// have popped and withdraws the call as a waiter; on success it acknowledges.
struct Call {
    shared: Arc<Shared>,
    prefix: String,
    id: String,
    armed: bool,
}

impl Call {
    fn new(queue: &RedisQueue) -> Self {
        Self {
            shared: Arc::clone(&queue.shared),
            prefix: queue.prefix.clone(),
            id: queue.shared.call_id(),
            armed: true,
        }
    }

    /// The item was handed over: forget the in-flight record (in the background).
    fn acknowledge(mut self) {
        self.armed = false;
        let shared = Arc::clone(&self.shared);
        let inflight = format!("{}:inflight", self.prefix);
        let id = self.id.clone();
        spawn_retrying(
            "queue acknowledgement",
            None,
            move || {
                let shared = Arc::clone(&shared);
                let mut command = redis::cmd("HDEL");
                command.arg(&inflight).arg(&id);
                Box::pin(async move { shared.query(&command).await.map(|_| ()) })
            },
            None,
        );
    }

    /// Nothing was popped and the call is not registered as a waiter.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let prefix = self.prefix.clone();
        let id = self.id.clone();
        spawn_retrying(
            "queue cancel",
            None,
            move || {
                let shared = Arc::clone(&shared);
                let prefix = prefix.clone();
                let id = id.clone();
                Box::pin(async move {
                    let mut call = shared.script(&SCRIPTS.queue_cancel);
                    call.arg(&prefix).arg(&id);
                    let reply = shared.eval(&call).await?;
                    if int("queue_cancel", &reply)? == 1 {
                        tracing::debug!(%prefix, "cancelled dequeue put its item back");
                    }
                    Ok(())
                })
            },
            None,
        );
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn enqueue_with_priority(&self, item: Bytes, priority: u16) -> Result<()> {
        let mut call = self.shared.script(&SCRIPTS.queue_enqueue);
        call.arg(&self.prefix).arg(priority).arg(item.as_ref());
        self.shared.eval(&call).await?;
        Ok(())
    }

    /// Waits for an item and removes it.
    ///
    /// Cancel-safety: cancel-safe. A dropped call puts back, in the background, an
    /// item it may have popped, at its place in the queue.
    async fn dequeue(&self) -> Result<Bytes> {
        let call = Call::new(self);
        let channel = self
            .shared
            .keys
            .channel(&format!("{}:w:{}", self.prefix, call.id));
        let mut wake = self.shared.notifier.subscribe(channel).await?;
        let mut backoff = Backoff::new();
        loop {
            // A pop is idempotent per call id, so connection trouble is ridden out.
            let delay = match self.pop(&call.id, true).await {
                Ok(Some(item)) => {
                    call.acknowledge();
                    return Ok(item);
                }
                Ok(None) => {
                    backoff.succeeded();
                    WAITER_TTL * 2 / 3
                }
                Err(error) => backoff.failed(&error).ok_or(error)?,
            };
            tokio::select! {
                event = wake.recv() => { event?; wake.drain(); }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Removes the first item if there is one.
    ///
    /// Cancel-safety: cancel-safe, as [`RedisQueue::dequeue`].
    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        let call = Call::new(self);
        match self.pop(&call.id, false).await? {
            Some(item) => {
                call.acknowledge();
                Ok(Some(item))
            }
            None => {
                call.disarm();
                Ok(None)
            }
        }
    }

    async fn len(&self) -> Result<usize> {
        let reply = self
            .shared
            .query(redis::cmd("ZCARD").arg(format!("{}:items", self.prefix)))
            .await?;
        usize::try_from(int("ZCARD", &reply)?).map_err(|_| unexpected("ZCARD", &reply))
    }
}
