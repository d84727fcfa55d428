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
//! # Idempotent enqueue
//!
//! Every enqueue carries an [`AppendKey`]: a caller's (`enqueue_once`) or one the call
//! draws (`enqueue`). Its script sets the record `p:k:u:<key>` or `p:k:g:<call id>`
//! (value: the call's id) with `SET NX PX` for [the key's window](AppendKey::window)
//! and appends only when that set succeeds, in the queue's hash slot. A repeat after a
//! lost reply finds the record with its own call id and answers that the item is
//! appended; another call with the same key finds another id and appends nothing.
//! Records expire on the server's clock; a server that forgets them (a restart without
//! persistence, a failover to a replica that missed them) forgets the dedup window with
//! them, as it forgets items.
//!
//! Blocking consumers wait on their own pub/sub channel and register in `p:waiters`
//! (with a marker key `p:wm:<id>` of [`QUEUE_WAITER_TTL`]); each enqueue wakes exactly one
//! live waiter, the longest waiting, and a consumer that pops while items remain
//! wakes the next one, so a wake-up lost with a crashed consumer is passed on. As a
//! safety net, a waiting consumer re-registers every two thirds of [`QUEUE_WAITER_TTL`].
//!
//! A consumer *process* that crashes between the pop and the acknowledgement leaves
//! its item in `p:inflight`, not lost. Each record is timed (`p:ift`, the server's
//! clock at the claim), and one older than the URL's `stale_claim=` (by default
//! [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM); `queue_sweep` in `lua/lib.lua`)
//! is put back at its place by the next dequeue or receive of the queue, at the price
//! `STALE_CLAIM` names: a second delivery. A waiting consumer looks again when the
//! oldest claim comes due, as when a hold's TTL runs out.
//!
//! # Enqueue times ([`Queue::oldest_age`])
//!
//! The enqueue script records the server's `TIME` (ms) in the hash `p:et` under the
//! item's arrival counter, dropped with the item when it is popped or acknowledged;
//! `oldest_age` reads the first member of each priority that has one, on the same
//! clock. An item enqueued by a client without `p:et`, or put back after a cancelled
//! pop, has no time: it is left out of the age, never an error.
//!
//! # At-least-once delivery ([`Queue::receive`])
//!
//! A receive moves the first item into the hash `p:held` under its call id and sets
//! the hold key `p:e:<call id>` (PX = the session's TTL), listed in the session's
//! registry like a lock's entry: the keepalive renews it, and the end of the session
//! (revoked, closed, or found gone by its keepalive) releases it, putting the item
//! back at its place (same score, same member) and waking one waiting consumer. A
//! session that simply expires (its process died) leaves its hold key to expire: the
//! next dequeue, receive or settle of the queue puts such items back (`queue_sweep` in
//! `lua/lib.lua`), and a waiting consumer re-checks when the shortest-lived hold it saw
//! is due, so the item is back within the session's TTL. `ack` deletes the hold and
//! the record; `nack` puts the item back. The delivery count lives in `p:dc` (member
//! to count), dropped with the item. A receive dropped before it returns puts back
//! what it may have held (the clean-up script of a dequeue), uncounted.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::queue::{AppendKey, Enqueued};
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::{
    queue_recheck_after, waited, Claim, ClaimGuard, CleanUp, Failure, Idempotence, Make,
    RetryPolicy, SessionStoreSide as _, Settle, QUEUE_WAITER_TTL,
};
use distsync_core::{Delivery, Error, Name, Queue, Result, Session};
use tokio::time::Instant;

use crate::capabilities::BACKEND;
use crate::error::{array, bytes, int, unexpected};
use crate::keys::Kind;
use crate::scripts::{Lua, SCRIPTS};
use crate::session::{RedisLease, Registry};
use crate::store::Shared;
use crate::waiting;

/// The scripts of at-least-once delivery (with `lua/lib.lua` prepended, as in
/// [`crate::scripts`]).
struct DeliveryScripts {
    receive: Lua,
    settle: Lua,
    len: Lua,
    enqueue_once: Lua,
    age: Lua,
}

static DELIVERY: LazyLock<DeliveryScripts> = LazyLock::new(|| DeliveryScripts {
    receive: Lua::with_lib(include_str!("../lua/queue_receive.lua")),
    settle: Lua::with_lib(include_str!("../lua/queue_settle.lua")),
    len: Lua::with_lib(include_str!("../lua/queue_len.lua")),
    enqueue_once: Lua::with_lib(include_str!("../lua/queue_enqueue_once.lua")),
    age: Lua::with_lib(include_str!("../lua/queue_age.lua")),
});

/// What one pop or receive attempt found.
enum Popped {
    /// An item: at most once, or held (with its earlier deliveries and its record).
    Item(Bytes, Option<(u32, Vec<u8>)>),
    /// Nothing; an item may come back within this long (a hold's TTL running out, a
    /// claim going stale).
    Empty(Option<Duration>),
    /// The receiving session is gone.
    SessionGone,
}

/// A Redis queue.
pub(crate) struct RedisQueue {
    shared: Arc<Shared>,
    name: Name,
    prefix: String,
}

/// The key of receive call `id`'s hold in the queue under `prefix`, `p:e:<id>`.
fn hold_key(prefix: &str, id: &str) -> String {
    format!("{prefix}:e:{id}")
}

impl RedisQueue {
    /// One pop attempt of call `id`; `wait` registers the call as a waiter when empty.
    async fn pop(&self, id: &str, wait: bool) -> Result<Popped> {
        let mut call = self.shared.script_on(&SCRIPTS.queue_pop, &self.prefix);
        call.arg(id)
            .arg(if wait { "wait" } else { "try" })
            .arg(crate::call::millis(QUEUE_WAITER_TTL))
            .arg(self.shared.stale_claim_ms);
        let reply = self.shared.eval(&call).await?;
        let (flag, mut fields) = flagged("queue_pop", &reply)?;
        match flag {
            Some(1) => Ok(Popped::Item(item("queue_pop", fields.next())?, None)),
            Some(0) => Ok(Popped::Empty(soonest("queue_pop", fields.next())?)),
            _ => Err(unexpected("queue_pop", &reply)),
        }
    }

    /// One receive attempt of call `id` through `lease` (of `session`).
    async fn receive_once(
        &self,
        id: &str,
        session: &Session,
        lease: &RedisLease,
        wait: bool,
    ) -> Result<Popped> {
        let hold = hold_key(&self.prefix, id);
        let mut call = self.shared.script(&DELIVERY.receive);
        call.key(&hold);
        lease.session_keys(&mut call);
        call.arg(&self.prefix)
            .arg(id)
            .arg(if wait { "wait" } else { "try" })
            .arg(crate::call::millis(QUEUE_WAITER_TTL))
            .arg(lease.session_check(session))
            .arg(lease.margin_ms())
            .arg(lease.ttl_ms())
            .arg(self.shared.stale_claim_ms);
        // The hold is pending for the session's renewals while this attempt is in
        // flight, and only then: until listed below, or until the attempt ends without
        // an item (see `HeldKeys`).
        let _pending = lease.registry().taking(&hold);
        let reply = self.shared.eval(&call).await?;
        let (flag, mut fields) = flagged("queue_receive", &reply)?;
        match flag {
            Some(1) => {
                let item = item("queue_receive", fields.next())?;
                let earlier = fields
                    .next()
                    .map(|n| int("queue_receive", &n))
                    .transpose()?
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| unexpected("queue_receive", &reply))?;
                let record = fields
                    .next()
                    .map(|record| bytes("queue_receive", record))
                    .transpose()?
                    .flatten()
                    .ok_or_else(|| unexpected("queue_receive", &reply))?;
                lease.registry().listed(&hold, &format!("q{id}"));
                // The record holds the item's bytes as they are: never decoded.
                Ok(Popped::Item(item, Some((earlier, record))))
            }
            Some(0) => Ok(Popped::Empty(soonest("queue_receive", fields.next())?)),
            Some(-1) => Ok(Popped::SessionGone),
            _ => Err(unexpected("queue_receive", &reply)),
        }
    }

    /// `receive` (`wait`) or `try_receive`.
    async fn receive_through(&self, session: &Session, wait: bool) -> Result<Option<Delivery>> {
        let lease = RedisLease::of(session, &self.shared)?;
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        let lost = session.lost_token();
        let (id, call) = Call::new(self, lease.registry().clone());
        // A receive is idempotent per call id, so connection trouble is ridden out: by
        // a `receive` for as long as it waits, by a `try_receive` (a one-shot call)
        // within the budget.
        let popped = if wait {
            let channel = format!("{}:w:{}", self.prefix, id);
            waiting::wait_until(
                &self.shared,
                &channel,
                "queue receive",
                Some(lost),
                |_| async {
                    Ok(match self.receive_once(&id, session, lease, true).await? {
                        Popped::Empty(soonest) => NotYet(Some(queue_recheck_after(soonest))),
                        popped => Ready(popped),
                    })
                },
            )
            .await?
        } else {
            let deadline = Instant::now() + self.shared.retry.budget();
            let attempt = || self.receive_once(&id, session, lease, false);
            self.shared
                .retry
                .idempotent_until("queue receive", Some(deadline), Some(lost), attempt)
                .await?
        };
        match popped {
            Popped::Item(item, Some((earlier, record))) => {
                // Listed for the session's renewals by `receive_once`.
                let (hold, value) = (hold_key(&self.prefix, &id), format!("q{id}"));
                // Under Cluster, listed in the store's session registry too, for a
                // revoke from another client; should that fail, the owner still
                // releases the hold itself, and it expires with the session.
                let registered = lease
                    .registry()
                    .register(&self.shared, &hold, &value, lease.ttl_ms())
                    .await;
                if let Err(error) = registered {
                    tracing::debug!(%error, hold, "listing a received item's hold in the session registry failed");
                }
                let settle = RedisSettle {
                    shared: Arc::clone(&self.shared),
                    prefix: self.prefix.clone(),
                    id: id.clone(),
                    registry: lease.registry().clone(),
                    record,
                    unlisted: std::sync::atomic::AtomicBool::new(false),
                };
                call.disarm();
                Ok(Some(Delivery::new(
                    item,
                    earlier,
                    session,
                    Box::new(settle),
                )))
            }
            Popped::Item(_, None) => Err(Error::backend(
                BACKEND,
                "queue_receive answered without a hold",
            )),
            // Left armed: the clean-up withdraws the call as a waiter (an earlier
            // attempt may have registered it) and passes on a wake-up.
            Popped::SessionGone => Err(Error::SessionLost),
            Popped::Empty(_) => {
                call.disarm();
                Ok(None)
            }
        }
    }
}

/// A pop's or receive's reply: its flag (1: an item, 0: none, -1: the session is gone)
/// and the fields that follow it.
fn flagged(
    what: &str,
    reply: &redis::Value,
) -> Result<(Option<i64>, std::vec::IntoIter<redis::Value>)> {
    let mut fields = array(what, reply.clone())?.into_iter();
    let flag = fields.next().map(|flag| int(what, &flag)).transpose()?;
    Ok((flag, fields))
}

/// The item a pop or receive reported (empty for a nil).
fn item(what: &str, field: Option<redis::Value>) -> Result<Bytes> {
    let item = field.map(|item| bytes(what, item)).transpose()?.flatten();
    Ok(Bytes::from(item.unwrap_or_default()))
}

/// How long until an item may come back, as a pop or receive reported (the shortest
/// hold TTL or the time until the oldest claim is stale; `-1`: neither).
fn soonest(what: &str, field: Option<redis::Value>) -> Result<Option<Duration>> {
    let Some(field) = field else {
        return Ok(None);
    };
    let ms = int(what, &field)?;
    Ok(u64::try_from(ms).ok().map(Duration::from_millis))
}

/// One held item's acknowledgement and return.
struct RedisSettle {
    shared: Arc<Shared>,
    prefix: String,
    id: String,
    registry: Registry,
    /// The in-flight record as stored (the item's bytes included), given back as is.
    record: Vec<u8>,
    /// Whether a settlement took the hold out of the session's registry.
    unlisted: std::sync::atomic::AtomicBool,
}

impl RedisSettle {
    /// One attempt at settling the hold (`op`: `ack` or `nack`), idempotent by the call
    /// id. The first attempt takes the hold out of the session's registry first.
    async fn settle(&self, op: &str) -> Result<i64> {
        let hold = hold_key(&self.prefix, &self.id);
        if !self
            .unlisted
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.registry.unlisted(&hold);
            if let Err(error) = self.registry.unregister(&self.shared, &hold).await {
                // A listing left behind only makes a later revoke release a key already gone.
                tracing::debug!(%error, hold, "unlisting a settled hold from the session registry failed");
            }
        }
        let mut call = self.shared.script(&DELIVERY.settle);
        call.key(&hold);
        self.registry.key_into(&mut call);
        call.arg(&self.prefix)
            .arg(&self.id)
            .arg(op)
            .arg(&self.record)
            .arg(self.shared.stale_claim_ms);
        int("queue_settle", &self.shared.eval(&call).await?)
    }
}

#[async_trait]
impl Settle for RedisSettle {
    async fn ack_step(&self) -> Result<bool> {
        Ok(self.settle("ack").await? != 0)
    }

    async fn nack_step(&self) -> Result<()> {
        self.settle("nack").await.map(|_| ())
    }

    fn policy(&self) -> RetryPolicy {
        self.shared.retry
    }
}

/// The claim of a dequeue or receive call: put back when its guard is dropped armed
/// (what the call may have popped goes back, and the call is withdrawn as a waiter);
/// handed over, its in-flight record is forgotten. Both run in the background for as
/// long as they take, keyed by the call id (a retry after one that landed changes
/// nothing); an item they leave claimed goes back once its record is stale (a
/// dequeue's) or its hold expires (a receive's).
struct Call {
    shared: Arc<Shared>,
    prefix: String,
    id: String,
    /// The session registry of a receive call (none for a dequeue).
    registry: Registry,
}

impl Call {
    /// A call's id, and its claim, armed: a receive's with its session's `registry`, a
    /// dequeue's with [`Registry::none`] (it holds nothing through a session; the cancel
    /// script is passed "").
    fn new(queue: &RedisQueue, registry: Registry) -> (String, ClaimGuard<Self>) {
        let id = queue.shared.call_id();
        let call = Self {
            shared: Arc::clone(&queue.shared),
            prefix: queue.prefix.clone(),
            id: id.clone(),
            registry,
        };
        (id, ClaimGuard::new(call))
    }
}

#[async_trait]
impl Claim for Call {
    fn put_back_clean_up(&self) -> CleanUp {
        CleanUp::new(
            "putting back a cancelled dequeue's item",
            "its item goes back once stale or its hold expires",
        )
        .of(format_args!("{} {}", self.prefix, self.id))
    }

    /// Withdraws the call as a waiter, and puts back what it may have popped.
    async fn put_back(&self) -> Result<()> {
        let hold = hold_key(&self.prefix, &self.id);
        self.registry.unlisted(&hold);
        self.registry.unregister(&self.shared, &hold).await?;
        let mut call = self.shared.script_on(&SCRIPTS.queue_cancel, &self.prefix);
        call.arg(&self.id).arg(self.registry.arg());
        if int("queue_cancel", &self.shared.eval(&call).await?)? == 1 {
            tracing::debug!(prefix = %self.prefix, "cancelled dequeue put its item back");
        }
        Ok(())
    }

    fn forget_clean_up(&self) -> Option<CleanUp> {
        Some(
            CleanUp::new(
                "forgetting a dequeued item's in-flight record",
                "it is put back as stale and delivered again",
            )
            .of(format_args!("{}:inflight {}", self.prefix, self.id)),
        )
    }

    async fn forget(&self) -> Result<()> {
        self.shared
            .query(
                redis::cmd("HDEL")
                    .arg(format!("{}:inflight", self.prefix))
                    .arg(&self.id),
            )
            .await?;
        self.shared
            .query(
                redis::cmd("ZREM")
                    .arg(format!("{}:ift", self.prefix))
                    .arg(&self.id),
            )
            .await
            .map(drop)
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Appends unless `key` was seen within its window: one call id across the attempts,
    /// which repeat through transient failures within the one-shot budget (see
    /// the module docs).
    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        let record = key.record();
        let id = self.shared.call_id();
        let window_ms = u64::try_from(key.window().as_millis()).unwrap_or(u64::MAX);
        let attempt = || {
            let mut call = self.shared.script_on(&DELIVERY.enqueue_once, &self.prefix);
            call.arg(priority)
                .arg(item.as_ref())
                .arg(&record)
                .arg(&id)
                .arg(window_ms);
            async move { int("queue_enqueue_once", &self.shared.eval(&call).await?) }
        };
        let answer = self
            .shared
            .retry
            .one_shot(
                "queue enqueue",
                Idempotence::Idempotent,
                Failure::of,
                attempt,
            )
            .await?;
        match answer {
            1 | 2 => Ok(Enqueued::New),
            0 => Ok(Enqueued::Duplicate),
            other => Err(Error::backend(
                BACKEND,
                format!("queue_enqueue_once answered {other}"),
            )),
        }
    }

    /// Cancel-safety: cancel-safe. A dropped call puts back, in the background, an
    /// item it may have popped, at its place in the queue.
    async fn dequeue(&self) -> Result<Bytes> {
        let (id, call) = Call::new(self, Registry::none());
        let channel = format!("{}:w:{}", self.prefix, id);
        // A pop is idempotent per call id, so connection trouble is ridden out.
        let item = waiting::wait_until(&self.shared, &channel, "queue dequeue", None, |_| async {
            Ok(match self.pop(&id, true).await? {
                Popped::Item(item, _) => Ready(item),
                Popped::Empty(soonest) => NotYet(Some(queue_recheck_after(soonest))),
                Popped::SessionGone => return Err(unexpected("queue_pop", &redis::Value::Nil)),
            })
        })
        .await?;
        call.hand_over();
        Ok(item)
    }

    /// Cancel-safety: cancel-safe, as [`RedisQueue::dequeue`].
    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        let (id, call) = Call::new(self, Registry::none());
        match self.pop(&id, false).await? {
            Popped::Item(item, _) => {
                call.hand_over();
                Ok(Some(item))
            }
            Popped::Empty(_) | Popped::SessionGone => {
                call.disarm();
                Ok(None)
            }
        }
    }

    /// Cancel-safety: cancel-safe. A dropped call puts back, in the background, an
    /// item it may have held, at its place, uncounted.
    async fn receive(&self, session: &Session) -> Result<Delivery> {
        waited(
            BACKEND,
            "receive",
            self.receive_through(session, true).await?,
        )
    }

    /// Cancel-safety: cancel-safe, as [`RedisQueue::receive`].
    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        self.receive_through(session, false).await
    }

    /// Counts queued items, including those whose holder's session has ended but that
    /// no consumer has put back yet.
    async fn len(&self) -> Result<usize> {
        let call = self.shared.script_on(&DELIVERY.len, &self.prefix);
        let reply = self.shared.eval(&call).await?;
        usize::try_from(int("queue_len", &reply)?).map_err(|_| unexpected("queue_len", &reply))
    }

    /// The server's `TIME` less the enqueue time (`p:et`, set on the server's clock by
    /// the enqueue script) of the oldest item in `p:items`: held and popped items are
    /// not counted, and items without a time (put back after a
    /// cancelled pop) are unknown and left out. One read per priority.
    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let call = self.shared.script_on(&DELIVERY.age, &self.prefix);
        let reply = self.shared.eval(&call).await?;
        let ms = int("queue_age", &reply)?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }
}

impl Make<Arc<Shared>, Name> for RedisQueue {
    fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            prefix: shared.keys.primitive(&name, Kind::Queue),
            shared: Arc::clone(shared),
            name,
        })
    }
}
