//! The durable queue, after etcd's Go `recipes.PriorityQueue` (a plain `enqueue` is
//! priority 0, so a queue used only with `enqueue` is FIFO), made lossless and
//! herd-free.
//!
//! # Layout
//!
//! Every key of queue `<name>` is under `Q = <ns>/queue/<escaped name>` (see
//! [`Kind::prefix`]), so no other queue, lock, election or other primitive reads or
//! writes it, and nothing is written outside the namespace:
//!
//! | key | value | what |
//! |---|---|---|
//! | `Q/i/<priority %05d>/<sequence %016d>` | the item | an item |
//! | `Q/s/<priority %05d>` | empty | the priority's sequence guard |
//! | `Q/c/<call id>/<priority %05d>/<sequence %016d>` | the item | an item claimed by a dequeue call, not yet handed over |
//! | `Q/w/<unix nanos>` | the call id | a waiting consumer |
//! | `Q/h/<priority %05d>/<sequence %016d>` | the call id, on the receiver's lease | an item received (at-least-once), held through a session |
//! | `Q/d/<priority %05d>/<sequence %016d>` | decimal count | how many times `receive` delivered the item |
//! | `Q/t/<priority %05d>/<sequence %016d>` | decimal nanoseconds | when the item was enqueued, on the store's clock ([`Kv::clock`]; written only where the store has one) |
//! | `Q/k/u/<idempotency key>`, `Q/k/g/<call id>` | the enqueue's call id, on a lease | an enqueue's idempotency record (see the `dedup` submodule, `queue_dedup.rs`) |
//!
//! A call id is `<unix ms %013d>-<32 hex digits>`: the claim's wall-clock time, then
//! a random id.
//!
//! # At-least-once delivery
//!
//! `receive` leaves the item at its key and puts a hold key on the receiver's lease;
//! every reader skips held items; `nack` or the lease's end deletes the hold key, so
//! the item is queued again at its place (see the `delivery` submodule,
//! `queue_delivery.rs`). At-most-once claims skip held items too.
//!
//! # Enqueue
//!
//! As Go's `newSequentialKV`: the sequence is one more than the last item key of that
//! priority, and the transaction that puts the item also touches the sequence guard,
//! succeeding only if the guard was not touched since the read, so two producers never
//! take one number. Producers that race for the tail all read it, and all but one lose
//! the compare: a loser pauses a random part of its lost attempt's duration, a window
//! that doubles with each loss in a row, before it reads again ([`Contention`]), so that
//! concurrent producers spread out rather than race again in step. The same transaction
//! reads the oldest waiting consumer, which the producer then wakes (see below). The
//! transaction also puts the enqueue's idempotency record and runs only while it is
//! absent, so a repeat after a lost reply, or an `enqueue_once` with a key seen within
//! the window, appends nothing (see the `dedup` submodule, `queue_dedup.rs`).
//!
//! # Enqueue times
//!
//! Where the store has a clock clients can read ([`Kv::clock`]: the memory store's
//! process clock, a SQL server's own), the enqueue transaction also writes the item's
//! time key `Q/t/…` (the clock read beside the enqueue's first read, so that a clock one
//! round trip away adds none to the enqueue), and every transaction that removes the item
//! (a claim, an acknowledgement) deletes it, so `oldest_age` reads the time keys of the
//! items not held. The time lives beside the item, not in its value, so that Go's recipes
//! read and write items as they always do. etcd has no clock a client can read (a
//! revision carries no time, and a client's clock is not the store's), so on etcd
//! `oldest_age` is unsupported. An item without a time key (put back after a cancelled
//! dequeue, or enqueued by a client that wrote none) has an unknown age and is left out.
//! In Go's layout (`layout=go`) no time is written and `oldest_age` is unsupported: Go's
//! consumers remove items and would leave the time keys behind.
//!
//! # Dequeue: delivered once, never lost
//!
//! Each dequeue call draws a call id. It claims the first item (lowest priority
//! number, then oldest) in one transaction that deletes the item, guarded on its mod
//! revision, and puts it into the in-flight record `Q/c/<call id>/…`. If the reply is
//! lost (the transaction may or may not have been applied), the call repeats the same
//! transaction: an applied first attempt makes the repeat fail, and its failure branch
//! reads the call's own in-flight record, so the call finds its item. The call then
//! returns the item and deletes the record (acknowledges) in the background. If the
//! call is dropped before it returns the item, the record is put back as an item,
//! under its old key if that is free (front of its priority), else at the back of its
//! priority. A call whose claim another consumer beat reads the first item again
//! after a pause, as a producer that lost the tail does (see "Enqueue"). Put-backs
//! and acknowledgements ride out transient failures (they are guarded on the record,
//! so repeating them is harmless).
//!
//! A record outlives its call only if the process dies between the claim and the
//! acknowledgement, or the store stays unreachable for minutes: the item is then
//! neither lost nor delivered twice. [`Backend::export`] lists such records as items of
//! their queue (export with the consumers stopped); an operator may move one back
//! after checking that its consumer did not get it (as for Redis' in-flight hash).
//!
//! No record stays forever: a record older than 15 minutes is put back by any consumer
//! of the queue (see the `queue_sweep` submodule, `queue_sweep.rs`, for when and at
//! what price).
//!
//! [`Backend::export`]: distsync_core::Backend::export
//!
//! # Waiting: one consumer woken per item
//!
//! A consumer that finds no item registers `Q/w/<unix nanos>`, reads the items again
//! together with its own key, at one revision (so neither an item put before its
//! registration nor a wake-up before that read is missed), and watches only its own
//! waiter key. Transient store errors while waiting are ridden out (see `wait`), so a
//! `dequeue` waits through a store outage; bound it with a timeout. A producer wakes the
//! oldest waiter by deleting its key (guarded on the key's create revision, so two
//! producers wake two waiters). A woken consumer claims the first item, or registers
//! again at the back if another consumer was faster. A consumer whose dequeue is dropped
//! removes its waiter key; if it had been woken meanwhile, it passes the wake-up on to
//! the next waiter. A consumer that claims an item while more items and waiters remain
//! wakes the next waiter too, so a wake-up lost with a crashed consumer process delays an
//! item only until the next claim or enqueue. The first waiter in line also watches the
//! hold keys, so that an item put back by a receiver (`nack`, its session's end) wakes
//! it, and every other waiter watches its predecessor's key (re-reading when it leaves
//! the line, to learn it is first now): one waiter is woken per returned item too. A
//! waiter that becomes first watches the holds from its last read that found nothing to
//! take, not from now: an item returned while the first key in line was one whose waiter
//! had already left (its key is removed in the background) woke nobody, and is taken
//! then.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kv::{
    Compare, CompareOp, EventKind, KeyValue, Kv, LeaseId, Range, RangeResponse, Revision,
    SortOrder, SortTarget, Txn, TxnOp, TxnResponse,
};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::queue::{AppendKey, Queue};
use distsync_core::raw::waited;

use super::key::{
    count_under, digits, if_created_at, put_new_key, range_at, KeyLayout, KeySpace, Kind,
    UniqueKeys,
};
use super::wait::{next_event, patiently};
use distsync_core::raw::{
    detached, Claim, ClaimGuard, ClaimSweeps, CleanUp, Contention, RetryPolicy,
};

/// How long a claim rides out transient failures before its call gives up.
const CLAIM_BUDGET: Duration = Duration::from_secs(60);

/// How long the deletion of a delivered item's in-flight record rides out transient
/// failures.
const ACK_BUDGET: Duration = Duration::from_secs(600);

/// How long a put-back of an undelivered item rides out transient failures before it
/// is left in its in-flight record.
const PUT_BACK_BUDGET: Duration = Duration::from_secs(600);

/// How long waking a waiter rides out transient failures.
const WAKE_BUDGET: Duration = Duration::from_secs(10);

/// The keys of one queue (see the module docs).
#[derive(Clone, Debug)]
struct Layout {
    /// `<ns>/queue/<escaped name>`: the root of the keys only distsync reads (claims,
    /// waiters, holds, delivery counters), in both layouts.
    root: String,
    /// The prefix of every item key: `<root>/i/`, or Go's `<ns><name>/`.
    items: String,
    /// The prefix of the sequence guards: `<root>/s/`, or Go's `<ns>__<name>/`.
    guards: String,
    /// Whether Go programs may put items too (Go's layout): they wake nobody, so the
    /// first waiter also watches the items.
    shared_with_go: bool,
}

/// Where an item sits: its priority and sequence, or for an item of Go's plain
/// `recipe.Queue` (`<ns><name>/<unix nanos>`, Go's layout only) its nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Position {
    pub(super) priority: u16,
    pub(super) sequence: u64,
    /// An item of Go's plain `Queue` (`sequence` holds its unix nanoseconds).
    pub(super) plain: bool,
}

impl Position {
    /// The item key after the items prefix (also the tail of its claim, hold and
    /// delivery counter keys): `<priority %05d>/<sequence %016d>`, or the nanoseconds
    /// of a plain item.
    fn relative(self) -> String {
        if self.plain {
            self.sequence.to_string()
        } else {
            format!("{:05}/{:016}", self.priority, self.sequence)
        }
    }
}

impl Layout {
    fn new(space: &KeySpace, name: &Name) -> Self {
        let root = Kind::Queue.prefix(space.namespace(), name);
        match space.layout() {
            KeyLayout::Go => Self {
                items: format!("{}/", space.root(Kind::Queue, name)),
                guards: format!("{}__{name}/", space.namespace()),
                root,
                shared_with_go: true,
            },
            _ => Self {
                items: format!("{root}/i/"),
                guards: format!("{root}/s/"),
                root,
                shared_with_go: false,
            },
        }
    }

    /// The prefix of the item keys of `priority`.
    fn priority(&self, priority: u16) -> String {
        format!("{}{priority:05}/", self.items)
    }

    fn item(&self, position: Position) -> String {
        format!("{}{}", self.items, position.relative())
    }

    fn guard(&self, priority: u16) -> String {
        format!("{}{priority:05}", self.guards)
    }

    /// The prefix of the in-flight records of `call`.
    fn claims(&self, call: &str) -> String {
        format!("{}/c/{call}/", self.root)
    }

    fn claim(&self, call: &str, position: Position) -> String {
        format!("{}{}", self.claims(call), position.relative())
    }

    /// The prefix of every hold key (an item received, held through a session).
    fn holds(&self) -> String {
        format!("{}/h/", self.root)
    }

    /// The hold key of the item at `position`, attached to the holder's lease.
    fn hold(&self, position: Position) -> String {
        format!("{}{}", self.holds(), position.relative())
    }

    /// The delivery counter of the item at `position` (how many times `receive` gave
    /// it out; absent for 0).
    fn deliveries(&self, position: Position) -> String {
        format!("{}/d/{}", self.root, position.relative())
    }

    /// The enqueue time key of the item at `position` (see the module docs).
    fn enqueued(&self, position: Position) -> String {
        format!("{}{}", self.times(), position.relative())
    }

    /// The prefix of every enqueue time key.
    fn times(&self) -> String {
        format!("{}/t/", self.root)
    }

    /// The positions of the well-formed hold keys read in `holds`: the held items.
    fn held(&self, holds: &RangeResponse) -> HashSet<Position> {
        let prefix = self.holds();
        holds
            .kvs
            .iter()
            .filter_map(|hold| parse_position(hold.key.strip_prefix(&prefix)?))
            .collect()
    }

    /// The idempotency record of a user's key (see the `dedup` submodule).
    fn dedup_user(&self, key: &str) -> String {
        format!("{}/k/u/{key}", self.root)
    }

    /// The idempotency record of the key a plain enqueue drew.
    fn dedup_call(&self, call: &str) -> String {
        format!("{}/k/g/{call}", self.root)
    }

    /// The prefix of every in-flight record, of every call.
    fn all_claims(&self) -> String {
        format!("{}/c/", self.root)
    }

    /// The prefix of the waiter keys, without its trailing `/`.
    fn waiters(&self) -> String {
        format!("{}/w", self.root)
    }

    /// The oldest waiter.
    fn first_waiter(&self) -> Range {
        Range::prefix(format!("{}/", self.waiters())).first_create()
    }

    /// Deletes the waiter key `key` if it is still the one created at
    /// `create_revision`, else reads the oldest waiter.
    fn delete_waiter(&self, key: &str, create_revision: Revision) -> Txn {
        let unchanged = Compare::create_revision(key, CompareOp::Equal, create_revision);
        Txn::when(vec![unchanged])
            .and_then(vec![TxnOp::delete(key)])
            .or_else(vec![TxnOp::Range(self.first_waiter())])
    }

    /// The position of a well-formed item key (`None` for any other key).
    fn item_position(&self, key: &str) -> Option<Position> {
        parse_position(key.strip_prefix(&self.items)?)
    }

    /// The position of a well-formed in-flight record key of `call`.
    fn claim_position(&self, call: &str, key: &str) -> Option<Position> {
        parse_position(key.strip_prefix(&self.claims(call))?)
    }
}

/// `<priority %05d>/<sequence %016d>`, or the 19 digits of a plain item's unix
/// nanoseconds (Go's `Queue` writes them with `%v`).
pub(super) fn parse_position(relative: &str) -> Option<Position> {
    let Some((priority, sequence)) = relative.split_once('/') else {
        if !digits(relative, 19) {
            return None;
        }
        return Some(Position {
            priority: 0,
            sequence: relative.parse().ok()?,
            plain: true,
        });
    };
    if !digits(priority, 5) || !digits(sequence, 16) {
        return None;
    }
    Some(Position {
        priority: priority.parse().ok()?,
        sequence: sequence.parse().ok()?,
        plain: false,
    })
}

/// The first key after every key starting with `prefix` (etcd's prefix range end),
/// for a `prefix` ending in `/`.
fn after_prefix(prefix: &str) -> String {
    let mut end = prefix.trim_end_matches('/').to_owned();
    end.push('0'); // the byte after '/'
    end
}

#[path = "queue_dedup.rs"]
mod dedup;
#[path = "queue_delivery.rs"]
mod delivery;
pub use delivery::{ack_once, delivery_backend};
#[path = "queue_sweep.rs"]
mod queue_sweep;

use self::queue_sweep::claim_call_id;

/// How a queue finds the store lease behind a session (the backend's lease type is
/// generic, the queue is not).
pub(crate) type LeaseOf =
    Arc<dyn Fn(&distsync_core::session::Session) -> Result<LeaseId> + Send + Sync>;

/// A [`Queue`] over a [`Kv`] store.
pub(crate) struct KvQueue {
    kv: Arc<dyn Kv>,
    name: Name,
    layout: Layout,
    lease_of: LeaseOf,
    sweeps: ClaimSweeps,
    /// How old a claim must be before the sweep puts its item back.
    stale_claim: Duration,
    dedup_leases: dedup::DedupLeases,
}

/// An item read from the store.
struct Item {
    kv: KeyValue,
    position: Position,
}

impl KvQueue {
    /// The queue `name` under `namespace`.
    pub(crate) fn new(kv: Arc<dyn Kv>, space: &KeySpace, name: Name, lease_of: LeaseOf) -> Self {
        Self {
            kv,
            layout: Layout::new(space, &name),
            name,
            lease_of,
            sweeps: ClaimSweeps::default(),
            stale_claim: distsync_core::queue::STALE_CLAIM,
            dedup_leases: dedup::DedupLeases::default(),
        }
    }

    /// The same queue, its sweep putting back claims older than `bound`.
    pub(crate) fn with_stale_claim(mut self, bound: Duration) -> Self {
        self.stale_claim = bound;
        self
    }

    /// The first well-formed item that no live session holds (lowest priority
    /// number, then oldest), the answers of the reads `extra` in order, and the
    /// revision they all ran at. Keys under the item prefix that are not item keys
    /// (written by something else) are skipped.
    async fn scan(
        &self,
        extra: Vec<Range>,
    ) -> Result<(Option<Item>, Vec<RangeResponse>, Revision)> {
        let kv = &*self.kv;
        let end = after_prefix(&self.layout.items);
        let mut start = self.layout.items.clone();
        let mut batch = 1usize;
        loop {
            // Plain reads (not a transaction), all at the revision of the first.
            let holds = kv.range(Range::prefix(self.layout.holds())).await?;
            let revision = holds.revision;
            let items = Range::between(start.clone(), end.clone())
                .sorted(SortTarget::Key, SortOrder::Ascend, batch)
                .at_revision(revision);
            let items = kv.range(items).await?;
            let mut extras = Vec::with_capacity(extra.len());
            for read in &extra {
                extras.push(kv.range(read.clone().at_revision(revision)).await?);
            }
            let held = self.layout.held(&holds);
            let seen = items.kvs.len();
            let mut last = None;
            for found in items.kvs {
                match self.layout.item_position(&found.key) {
                    Some(position) if !held.contains(&position) => {
                        let item = Item {
                            kv: found,
                            position,
                        };
                        return Ok((Some(item), extras, revision));
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(key = %found.key, "queue skips a key that is not an item key");
                    }
                }
                last = Some(found.key);
            }
            match last {
                Some(last) if seen == batch && items.count > seen => {
                    start = format!("{last}\0");
                    batch = (held.len() + 1).max(batch * 2).min(1024);
                }
                _ => return Ok((None, extras, revision)),
            }
        }
    }

    /// Go's `PriorityQueue.Dequeue` (`wait`), or its non-waiting form.
    async fn take(&self, wait: bool) -> Result<Option<Bytes>> {
        let call = claim_call_id();
        let call = call.as_str();
        self.first_taken(call, wait, None, |item| async move {
            let claimed = claim(&self.kv, &self.layout, call, item).await?;
            // At once: no await, so no cancellation, between the claim's answer and
            // the caller.
            Ok(claimed.map(|(item, claim)| {
                claim.hand_over();
                item
            }))
        })
        .await
    }

    /// The first item, taken by `take` (`None`: another consumer took or changed it
    /// first, so the new first item is read after a pause, see the module docs,
    /// "Dequeue"); with none and `wait`, waits in line as call `call` (giving up when
    /// `lost` fires) and reads again. A waiting call rides out transient errors (see
    /// `wait`).
    async fn first_taken<T, F>(
        &self,
        call: &str,
        wait: bool,
        lost: Option<&CancellationToken>,
        take: impl Fn(Item) -> F,
    ) -> Result<Option<T>>
    where
        F: Future<Output = Result<Option<T>>>,
    {
        self.sweep_if_due().await;
        let mut contention = Contention::default();
        loop {
            let attempt = Instant::now();
            let read = || self.scan(Vec::new());
            let (first, _, _) = if wait {
                patiently(lost, "queue read", &self.layout.root, read).await?
            } else {
                read().await?
            };
            if let Some(item) = first {
                if let Some(taken) = take(item).await? {
                    return Ok(Some(taken));
                }
                contention.lost(attempt.elapsed()).await;
                continue;
            }
            if !wait {
                return Ok(None);
            }
            self.wait_for_item(call, lost).await?;
        }
    }

    /// Registers as a waiter and returns once woken, or once an item is there (or,
    /// with stale in-flight records about, once the next one is due for its sweep).
    /// With `lost` (a receive through a session), gives up with
    /// [`Error::SessionLost`] when it fires.
    ///
    /// Its phases: [`Self::register_waiter`], then, until woken or an item is there,
    /// [`Self::look_again`] and [`Self::wait_in_line`].
    async fn wait_for_item(&self, call: &str, lost: Option<&CancellationToken>) -> Result<()> {
        let (mut waiting, mine) = self.register_waiter(call, lost).await?;
        let key = waiting.key.clone();
        let waiters = format!("{}/", self.layout.waiters());
        let predecessor = Range::prefix(waiters)
            .last_create()
            .max_create_revision(mine - 1);
        let mut predecessor_left = false;
        // Where a watch of the holds starts: after the last read that found no item to
        // take, or the first read, so that it replays a return that woke nobody (see
        // the module docs, "Waiting"; the predecessor may have left without taking
        // the items a read after its departure leaves to it, e.g. a cancelled receive).
        let mut holds_from = None;
        loop {
            let looked = self
                .look_again(&key, mine, &predecessor, predecessor_left, lost)
                .await?;
            let (revision, item, before) = match looked {
                Looked::ItemThere => return Ok(()),
                Looked::OutOfLine => {
                    waiting.armed = false;
                    return Ok(());
                }
                Looked::InLine {
                    revision,
                    item,
                    before,
                } => (revision, item, before),
            };
            if !item || holds_from.is_none() {
                holds_from = Some(revision + 1);
            }
            let waited = self
                .wait_in_line(&key, revision, before.as_ref(), holds_from, lost)
                .await?;
            predecessor_left = match waited {
                Waited::Woken => {
                    waiting.armed = false;
                    return Ok(());
                }
                Waited::LookAgain { predecessor_left } => predecessor_left,
            };
        }
    }

    /// Puts a new waiter key holding `call` and returns it, armed, with its create
    /// revision.
    async fn register_waiter(
        &self,
        call: &str,
        lost: Option<&CancellationToken>,
    ) -> Result<(Waiting, Revision)> {
        let kv = &*self.kv;
        let mut names = UniqueKeys::new(self.layout.waiters());
        loop {
            let key = names.next_key();
            let mut waiting = Waiting {
                kv: Arc::clone(&self.kv),
                layout: self.layout.clone(),
                key: key.clone(),
                call: call.to_owned(),
                create_revision: None,
                armed: true,
            };
            let value = Bytes::from(call.to_owned());
            let register = || put_new_key(kv, &key, value.clone(), 0);
            // A repeat after a lost reply finds the key taken, by this call: `waiting`
            // then removes it (it holds this call's id) when dropped.
            if let Some(revision) = patiently(lost, "queue wait", &key, register).await? {
                waiting.create_revision = Some(revision);
                return Ok((waiting, revision));
            }
        }
    }

    /// Reads the items, the own waiter key `key` (created at `mine`) and its
    /// `predecessor` in line, at one revision: whether to go on waiting, and for what.
    async fn look_again(
        &self,
        key: &str,
        mine: Revision,
        predecessor: &Range,
        predecessor_left: bool,
        lost: Option<&CancellationToken>,
    ) -> Result<Looked> {
        // An item put before the registration woke nobody: look again, and at the
        // own key in the same read (a wake-up, then another consumer taking the
        // item, both before this read, must not leave this waiter out of line and
        // asleep). Leaving for an item (the drop of the armed waiter key) passes on a
        // wake-up this waiter got meanwhile.
        let extra = vec![Range::key(key), predecessor.clone()];
        let read = || self.scan(extra.clone());
        let (first, extras, revision) = patiently(lost, "queue read", key, read).await?;
        // After the predecessor left the line, an item there is likely the one
        // that woke it: this read only learns whether this waiter is first now.
        if first.is_some() && !predecessor_left {
            return Ok(Looked::ItemThere);
        }
        let own = extras.first().and_then(|own| own.kvs.first());
        if own.is_none_or(|found| found.create_revision != mine) {
            return Ok(Looked::OutOfLine);
        }
        Ok(Looked::InLine {
            revision,
            item: first.is_some(),
            before: extras.get(1).and_then(|range| range.kvs.first().cloned()),
        })
    }

    /// Waits, after the read at `revision`, for the own key `key` to be deleted (a
    /// wake-up), or for what makes a new read worth it: the waiter `before` this one
    /// leaving, or, for the first in line, a hold ending (from `holds_from`) or, in Go's
    /// layout, an item put; or the next sweep falling due (run here).
    async fn wait_in_line(
        &self,
        key: &str,
        revision: Revision,
        before: Option<&KeyValue>,
        holds_from: Option<Revision>,
        lost: Option<&CancellationToken>,
    ) -> Result<Waited> {
        let kv = &*self.kv;
        let woken = next_event(kv, key, false, revision + 1, EventKind::Delete, lost);
        let (watched, prefix, from) = match before {
            Some(waiter) => (waiter.key.clone(), false, revision + 1),
            None => (
                self.layout.holds(),
                true,
                holds_from.unwrap_or(revision + 1),
            ),
        };
        let changed = next_event(kv, &watched, prefix, from, EventKind::Delete, lost);
        // Go's producers wake nobody (see `Layout::shared_with_go`): one waiter, no herd.
        let watch_items = self.layout.shared_with_go && before.is_none();
        let arrived = async {
            if watch_items {
                let items = &self.layout.items;
                next_event(kv, items, true, revision + 1, EventKind::Put, lost).await
            } else {
                std::future::pending().await
            }
        };
        let sweep_due = self.sweeps.next_in();
        tokio::select! {
            event = woken => {
                if event?.is_some() {
                    return Ok(Waited::Woken);
                }
                // The watch ended: read again.
            }
            event = changed => {
                let predecessor_left = event?.is_some() && !prefix;
                return Ok(Waited::LookAgain { predecessor_left });
            }
            event = arrived => {
                // An item (or a watch that ended): read again.
                event?;
            }
            () = sleep_or_forever(sweep_due) => {
                self.sweep_if_due().await;
            }
        }
        Ok(Waited::LookAgain {
            predecessor_left: false,
        })
    }
}

/// What a waiter's read of the queue found ([`KvQueue::look_again`]).
enum Looked {
    /// An item to take: the waiter stops waiting (its key withdrawn).
    ItemThere,
    /// The own waiter key is gone, or is another's (a producer woke this waiter): the
    /// waiter stops waiting, with nothing to withdraw.
    OutOfLine,
    /// Still in line, as read at `revision`, with an item seen (`item`: one the
    /// predecessor, which just left, may take) or not, behind the waiter `before` (or
    /// first).
    InLine {
        revision: Revision,
        item: bool,
        before: Option<KeyValue>,
    },
}

/// How a waiter's wait in line ended ([`KvQueue::wait_in_line`]).
enum Waited {
    /// Its key was deleted: a producer woke it.
    Woken,
    /// Something changed: read again, knowing whether the predecessor left the line.
    LookAgain { predecessor_left: bool },
}

/// Sleeps for `delay`, or forever without one.
async fn sleep_or_forever(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// A waiter key; dropped armed (the waiter stops waiting other than by being woken),
/// it is removed in the background, and a wake-up it got meanwhile is passed on.
struct Waiting {
    kv: Arc<dyn Kv>,
    layout: Layout,
    key: String,
    call: String,
    create_revision: Option<Revision>,
    armed: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let kv = Arc::clone(&self.kv);
        let layout = self.layout.clone();
        let key = std::mem::take(&mut self.key);
        let call = std::mem::take(&mut self.call);
        let create_revision = self.create_revision;
        CleanUp::new("removing a queue waiter", "its key absorbs one wake-up")
            .of(&key)
            .within(WAKE_BUDGET)
            .spawn(move |clean_up| async move {
                let withdrawal = || withdraw(&*kv, &layout, &key, &call, create_revision);
                if let Withdrawn::WasWoken(next) = clean_up.retry(withdrawal).await? {
                    wake(&*kv, &layout, next).await;
                }
                Ok(())
            });
    }
}

/// What [`withdraw`] found.
enum Withdrawn {
    /// The waiter key was there and is deleted.
    Removed,
    /// It was gone: a producer woke this waiter. The oldest waiter left, to pass the
    /// wake-up on to.
    WasWoken(Option<KeyValue>),
}

/// Deletes a waiter key if it is still there. Idempotent.
async fn withdraw(
    kv: &dyn Kv,
    layout: &Layout,
    key: &str,
    call: &str,
    create_revision: Option<Revision>,
) -> Result<Withdrawn> {
    let create_revision = match create_revision {
        Some(revision) => revision,
        None => {
            // Registration's reply was lost: the key is ours if it holds our call id.
            let current = kv.range(Range::key(key)).await?;
            match current.kvs.first() {
                Some(found) if found.value == call.as_bytes() => found.create_revision,
                _ => return Ok(Withdrawn::Removed),
            }
        }
    };
    let response = kv.txn(layout.delete_waiter(key, create_revision)).await?;
    if response.succeeded {
        return Ok(Withdrawn::Removed);
    }
    let next = range_at(kv, &response, 0)?.kvs.into_iter().next();
    Ok(Withdrawn::WasWoken(next))
}

/// Wakes one waiter, starting with `first` (the oldest, as read): deletes its key,
/// guarded on its create revision; if it is gone already (woken by someone else, or
/// withdrawn), wakes the next oldest instead. A failure is logged, not returned: the
/// items are stored, and a later claim or enqueue wakes a waiter again.
async fn wake(kv: &dyn Kv, layout: &Layout, first: Option<KeyValue>) {
    let mut next = first;
    let deadline = Instant::now() + WAKE_BUDGET;
    while let Some(waiter) = next {
        let txn = layout.delete_waiter(&waiter.key, waiter.create_revision);
        let attempt = || kv.txn(txn.clone());
        let response = match RetryPolicy::default()
            .idempotent_until("queue wake-up", Some(deadline), None, attempt)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(key = %waiter.key, %error, "waking a queue consumer failed");
                return;
            }
        };
        if response.succeeded {
            tracing::trace!(key = %waiter.key, "woke a queue consumer");
            return;
        }
        next = match range_at(kv, &response, 0) {
            Ok(range) => range.kvs.into_iter().next(),
            Err(error) => {
                tracing::warn!(%error, "waking a queue consumer failed");
                return;
            }
        };
    }
}

/// The oldest waiter in a transaction's answer at `index`, if any.
fn waiter_in(kv: &dyn Kv, response: &TxnResponse, index: usize) -> Option<KeyValue> {
    range_at(kv, response, index)
        .ok()
        .and_then(|range| range.kvs.into_iter().next())
}

/// What [`put_sequential`] did.
#[derive(Debug)]
enum Put {
    /// The item is put.
    Done,
    /// The in-flight record to delete with it is gone (the item was already put back
    /// or acknowledged): nothing is put.
    Gone,
    /// The idempotency record exists: nothing is put by this attempt; `mine` when it
    /// holds this call's id (an earlier attempt, whose reply was lost, put the item).
    Duplicate { mine: bool },
}

/// Go's `newSequentialKV`: puts `value` as the next item of `priority`, and wakes the
/// oldest waiter.
///
/// With `record` (an in-flight record's key and create revision), the same transaction
/// deletes the record and only runs while it exists ([`Put::Gone`] when it does not).
/// With `dedup` (an idempotency record's key, its lease and the call's id, see the
/// `dedup` submodule), the same transaction puts the record and only runs while it is
/// absent ([`Put::Duplicate`] when it is not).
async fn put_sequential(
    kv: &dyn Kv,
    layout: &Layout,
    priority: u16,
    value: Bytes,
    record: Option<(&str, Revision)>,
    dedup: Option<(&str, LeaseId, &Bytes)>,
) -> Result<Put> {
    let guard_key = layout.guard(priority);
    let mut contention = Contention::default();
    loop {
        let attempt = Instant::now();
        // The store's clock beside the read, not after it (an age is a figure, not a
        // decision), and not in Go's layout (see the module docs, "Enqueue times").
        let (last, now) = futures::future::try_join(
            kv.range(Range::prefix(layout.priority(priority)).last_key()),
            async {
                if layout.shared_with_go {
                    Ok(None)
                } else {
                    kv.clock().await
                }
            },
        )
        .await?;
        let sequence = match last.kvs.first() {
            None => 0,
            Some(last) => match layout.item_position(&last.key) {
                Some(position) => position.sequence.saturating_add(1),
                None => {
                    return Err(Error::backend(
                        kv.backend(),
                        format!("queue key {:?} is not an item key", last.key),
                    ))
                }
            },
        };
        let position = Position {
            priority,
            sequence,
            plain: false,
        };
        let key = layout.item(position);
        // The guard key must not have changed since the read (see the module docs).
        let mut compares = vec![Compare::mod_revision(
            &guard_key,
            CompareOp::Less,
            last.revision + 1,
        )];
        let mut ops = vec![
            TxnOp::put(&guard_key, Bytes::new(), 0),
            TxnOp::put(key, value.clone(), 0),
        ];
        // A new item gets its time; a put-back's original time is not known here (its
        // time key went with its claim), so it has none.
        if let Some(now) = now {
            ops.push(match record {
                None => TxnOp::put(layout.enqueued(position), now.as_nanos().to_string(), 0),
                Some(_) => TxnOp::delete(layout.enqueued(position)),
            });
        }
        let mut failure = Vec::new();
        if let Some((record, revision)) = record {
            compares.push(Compare::create_revision(record, CompareOp::Equal, revision));
            ops.push(TxnOp::delete(record));
            failure.push(TxnOp::Range(Range::key(record)));
        }
        let dedup_at = failure.len();
        if let Some((dedup, lease, call)) = dedup {
            compares.push(Compare::version(dedup, CompareOp::Equal, 0));
            ops.push(TxnOp::put(dedup, call.clone(), lease));
            failure.push(TxnOp::Range(Range::key(dedup)));
        }
        ops.push(TxnOp::Range(layout.first_waiter()));
        let waiters_at = ops.len() - 1;
        let response = kv
            .txn(Txn::when(compares).and_then(ops).or_else(failure))
            .await?;
        if response.succeeded {
            wake(kv, layout, waiter_in(kv, &response, waiters_at)).await;
            return Ok(Put::Done);
        }
        if record.is_some() && range_at(kv, &response, 0)?.kvs.is_empty() {
            return Ok(Put::Gone);
        }
        if let Some((_, _, call)) = dedup {
            if let Some(found) = range_at(kv, &response, dedup_at)?.kvs.first() {
                return Ok(Put::Duplicate {
                    mine: found.value == *call,
                });
            }
        }
        // Another producer took the tail first (see the module docs, "Enqueue").
        contention.lost(attempt.elapsed()).await;
    }
}

/// Claims `item` for call `call`: `Some` if this call took it (now, or in an earlier
/// attempt whose reply was lost), `None` if another consumer did.
///
/// The claim runs [`detached`] and its outcome comes back inside a [`Claimed`], which
/// puts the item back if nobody receives it: a caller that drops the dequeue future
/// while the claim is in flight loses no item.
async fn claim(
    kv: &Arc<dyn Kv>,
    layout: &Layout,
    call: &str,
    item: Item,
) -> Result<Option<Claimed>> {
    let store = Arc::clone(kv);
    let layout = layout.clone();
    let call = call.to_owned();
    detached(kv.backend(), async move {
        let Some((claimed, next_waiter)) = claim_in_store(&store, &layout, &call, item).await?
        else {
            return Ok(None);
        };
        if next_waiter.is_some() {
            // More items and more waiters: pass the turn on (see the module docs), in a
            // task of its own so that the claim's answer does not wait for it.
            tokio::spawn(async move { wake(&*store, &layout, next_waiter).await });
        }
        Ok(Some(claimed))
    })
    .await
}

/// The claim transaction, repeated through transient failures (see the module docs):
/// the claimed item, with the oldest waiter when items remain after the claim.
async fn claim_in_store(
    kv: &Arc<dyn Kv>,
    layout: &Layout,
    call: &str,
    item: Item,
) -> Result<Option<(Claimed, Option<KeyValue>)>> {
    let record = layout.claim(call, item.position);
    // The item unchanged and not held by a receiver (see `delivery`).
    let txn = Txn::when(vec![
        Compare::mod_revision(&item.kv.key, CompareOp::Equal, item.kv.mod_revision),
        Compare::version(layout.hold(item.position), CompareOp::Equal, 0),
    ])
    .and_then(vec![
        TxnOp::delete(&item.kv.key),
        TxnOp::delete(layout.deliveries(item.position)),
        TxnOp::put(&record, item.kv.value.clone(), 0),
        TxnOp::Range(Range::between(layout.items.clone(), after_prefix(&layout.items)).first_key()),
        TxnOp::Range(layout.first_waiter()),
        TxnOp::delete(layout.enqueued(item.position)),
    ])
    .or_else(vec![TxnOp::Range(Range::prefix(layout.claims(call)))]);
    let deadline = Instant::now() + CLAIM_BUDGET;
    let attempt = || kv.txn(txn.clone());
    let response = RetryPolicy::default()
        .idempotent_until("queue claim", Some(deadline), None, attempt)
        .await
        .inspect_err(|error| {
            tracing::error!(
                key = %item.kv.key,
                call,
                %error,
                "queue claim failed with its outcome unknown; if the in-flight record appears, the item waits there",
            );
        })?;
    let claimed = |record: String, value: Bytes, position: Position, revision: Revision| {
        let claim = KvClaim {
            kv: Arc::clone(kv),
            layout: layout.clone(),
            record,
            record_revision: revision,
            position,
            value: value.clone(),
        };
        (value, ClaimGuard::new(claim))
    };
    if response.succeeded {
        let more_items = range_at(&**kv, &response, 3).is_ok_and(|range| !range.kvs.is_empty());
        let next_waiter = more_items.then(|| waiter_in(&**kv, &response, 4)).flatten();
        let claimed = claimed(record, item.kv.value, item.position, response.revision);
        return Ok(Some((claimed, next_waiter)));
    }
    // An earlier attempt, whose reply was lost, claimed it, or another consumer did.
    let Some(found) = range_at(&**kv, &response, 0)?.kvs.into_iter().next() else {
        return Ok(None);
    };
    let Some(position) = layout.claim_position(call, &found.key) else {
        return Err(Error::backend(
            kv.backend(),
            format!("queue in-flight key {:?} is malformed", found.key),
        ));
    };
    tracing::debug!(key = %found.key, "queue claim found after a lost reply");
    let claimed = claimed(found.key, found.value, position, found.create_revision);
    Ok(Some((claimed, None)))
}

/// An item moved into this call's in-flight record, and the claim that ends the record
/// once the item reaches the caller, or else puts the item back.
type Claimed = (Bytes, ClaimGuard<KvClaim>);

/// The in-flight record `record` (created at `record_revision`) of an item claimed from
/// `position`, holding `value`.
struct KvClaim {
    kv: Arc<dyn Kv>,
    layout: Layout,
    record: String,
    record_revision: Revision,
    position: Position,
    value: Bytes,
}

#[async_trait]
impl Claim for KvClaim {
    fn put_back_clean_up(&self) -> CleanUp {
        CleanUp::new(
            "putting back an undelivered queue item",
            "it stays in its in-flight record until swept as stale",
        )
        .of(&self.record)
        .within(PUT_BACK_BUDGET)
    }

    async fn put_back(&self) -> Result<()> {
        put_back(
            &*self.kv,
            &self.layout,
            &self.record,
            self.record_revision,
            self.position,
            self.value.clone(),
        )
        .await
    }

    fn forget_clean_up(&self) -> Option<CleanUp> {
        Some(
            CleanUp::new(
                "deleting a delivered queue item's in-flight record",
                "the record stays, and must not be put back",
            )
            .of(&self.record)
            .within(ACK_BUDGET),
        )
    }

    /// Not succeeding means the record is gone already: deleted by an attempt whose
    /// reply was lost (nothing else deletes it while this call holds it).
    async fn forget(&self) -> Result<()> {
        let delete = TxnOp::delete(&self.record);
        if_created_at(&*self.kv, &self.record, self.record_revision, delete)
            .await
            .map(drop)
    }
}

/// Restores an undelivered item from its in-flight record: under its own key if still
/// free (also touching the priority's guard key, so that no producer allocates that
/// key concurrently), else as a new item of the same priority (priority 0 for an item
/// of Go's plain `Queue`, whose own key is unique by its nanoseconds and so is only
/// taken if a Go producer drew the same nanosecond). Guarded on the record, so
/// repeating it is harmless.
async fn put_back(
    kv: &dyn Kv,
    layout: &Layout,
    record: &str,
    revision: Revision,
    position: Position,
    value: Bytes,
) -> Result<()> {
    let key = layout.item(position);
    let mut ops = vec![TxnOp::delete(record)];
    // A plain item's key is unique by its nanoseconds: no guard to touch.
    if !position.plain {
        ops.push(TxnOp::put(layout.guard(position.priority), Bytes::new(), 0));
    }
    ops.push(TxnOp::put(&key, value.clone(), 0));
    ops.push(TxnOp::Range(layout.first_waiter()));
    let txn = Txn::when(vec![
        Compare::create_revision(record, CompareOp::Equal, revision),
        Compare::create_revision(&key, CompareOp::Equal, 0),
    ])
    .and_then(ops)
    .or_else(vec![TxnOp::Range(Range::key(record))]);
    let response = kv.txn(txn).await?;
    if response.succeeded {
        tracing::debug!(%key, "undelivered queue item put back");
        let waiters_at = response.responses.len().saturating_sub(1);
        wake(kv, layout, waiter_in(kv, &response, waiters_at)).await;
        return Ok(());
    }
    if range_at(kv, &response, 0)?.kvs.is_empty() {
        // Put back already, by an attempt whose reply was lost.
        return Ok(());
    }
    let record = Some((record, revision));
    put_sequential(kv, layout, position.priority, value, record, None).await?;
    Ok(())
}

#[async_trait]
impl Queue for KvQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Go's `PriorityQueue.Enqueue`, then wakes the oldest waiting consumer.
    ///
    /// Cancel-safety: dropping the future leaves the item either queued once or not
    /// at all (a waiting consumer may then not be woken until the next enqueue).
    ///
    /// Repeated through lost replies, with the record of `key` (see the `dedup`
    /// submodule), kept for the call's window for a call's key, for the dedup window
    /// for a caller's.
    async fn append_bytes(
        &self,
        key: &AppendKey,
        item: Bytes,
        priority: u16,
    ) -> Result<distsync_core::queue::Enqueued> {
        let (record, window) = match key {
            AppendKey::Call(call) => (self.layout.dedup_call(call), dedup::Window::Call),
            AppendKey::Caller(key) => (self.layout.dedup_user(key.as_str()), dedup::Window::User),
        };
        self.enqueue_keyed(record, window, item, priority).await
    }

    /// Takes the first item; while there is none, waits in line to be woken by a
    /// producer.
    ///
    /// Cancel-safety: cancel-safe. The claim runs in a spawned task; if this future is
    /// dropped before the item is handed over, the item is put back, and a wake-up
    /// this consumer got is passed on.
    async fn dequeue(&self) -> Result<Bytes> {
        waited(self.kv.backend(), "dequeue", self.take(true).await?)
    }

    /// Takes the first item if there is one.
    ///
    /// Cancel-safety: as [`KvQueue::dequeue`].
    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        self.take(false).await
    }

    /// Receives the first item not held by anyone, and holds it through `session`
    /// (see the `delivery` module).
    ///
    /// Cancel-safety: cancel-safe. The hold runs in a spawned task; a delivery it
    /// makes for a dropped call is dropped, which nacks it.
    async fn receive(
        &self,
        session: &distsync_core::session::Session,
    ) -> Result<distsync_core::delivery::Delivery> {
        let delivery = self.receive_through(session, true).await?;
        waited(self.kv.backend(), "receive", delivery)
    }

    /// As [`KvQueue::receive`], without waiting.
    async fn try_receive(
        &self,
        session: &distsync_core::session::Session,
    ) -> Result<Option<distsync_core::delivery::Delivery>> {
        self.receive_through(session, false).await
    }

    /// The number of item keys less the held ones (items claimed but not yet handed
    /// over, and items held by a receiver, are not counted).
    async fn len(&self) -> Result<usize> {
        let items = &self.layout.items;
        let mut range = Range::between(items.clone(), after_prefix(items));
        range.limit = Some(1);
        let holds = self.kv.range(count_under(&self.layout.holds())).await?;
        let items = self.kv.range(range.at_revision(holds.revision)).await?;
        Ok(items.count.saturating_sub(holds.count))
    }

    /// The store's clock less the least time key of the items not held (see the
    /// module docs): one read of the holds and one of the time keys, at one revision.
    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let Some(now) = self.kv.clock().await? else {
            return Err(Error::unsupported(
                self.kv.backend(),
                "the age of a queue's oldest item (the store has no clock a client can read, \
                 and an item's value is Go's recipe format: no enqueue time is recorded)",
            ));
        };
        if self.layout.shared_with_go {
            return Err(Error::unsupported(
                self.kv.backend(),
                "the age of a queue's oldest item in Go's layout (Go's consumers remove \
                 items without their time keys, so none is recorded)",
            ));
        }
        let holds = self.kv.range(Range::prefix(self.layout.holds())).await?;
        let held = self.layout.held(&holds);
        let prefix = self.layout.times();
        let times = Range::prefix(&prefix).at_revision(holds.revision);
        let times = self.kv.range(times).await?;
        let oldest = times
            .kvs
            .iter()
            .filter(|time| {
                time.key
                    .strip_prefix(&prefix)
                    .and_then(parse_position)
                    .is_some_and(|position| !held.contains(&position))
            })
            .filter_map(|time| std::str::from_utf8(&time.value).ok()?.parse::<u128>().ok())
            .min();
        Ok(oldest.map(|nanos| {
            let since = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            now.saturating_sub(since)
        }))
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use std::collections::BTreeSet;

    use bytes::Bytes;

    use crate::kv::{Kv, Range};
    use crate::memory::MemoryKv;
    use crate::memory::TxnFault;
    use crate::recipes::testing::{
        backend, flaky_backend, name, session, session_of, settle, within,
    };
    use crate::recipes::KvBackend;
    use distsync_core::backend::Backend;

    /// Every key in `kv`.
    async fn keys(kv: &impl Kv) -> Vec<String> {
        let all = kv.range(Range::prefix("")).await.unwrap();
        all.kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn priority_then_fifo_in_its_own_layout() {
        let backend = backend();
        let q = backend.queue(name("jobs")).unwrap();
        q.enqueue_with_priority("low-1", 7).await.unwrap();
        q.enqueue("high-1").await.unwrap();
        q.enqueue_with_priority("low-2", 7).await.unwrap();
        q.enqueue("high-2").await.unwrap();
        assert_eq!(q.len().await.unwrap(), 4);
        let items: Vec<String> = keys(&**backend.kv())
            .await
            .into_iter()
            .filter(|key| key.contains("/i/"))
            .collect();
        assert_eq!(
            items,
            [
                "/queue/jobs/i/00000/0000000000000000",
                "/queue/jobs/i/00000/0000000000000001",
                "/queue/jobs/i/00007/0000000000000000",
                "/queue/jobs/i/00007/0000000000000001",
            ]
        );
        for expected in ["high-1", "high-2", "low-1", "low-2"] {
            assert_eq!(q.try_dequeue().await.unwrap().unwrap(), expected);
        }
        assert!(q.try_dequeue().await.unwrap().is_none());
        assert!(q.is_empty().await.unwrap());
        settle().await; // in-flight records are deleted in the background
        let left = keys(&**backend.kv()).await;
        assert!(
            left.iter()
                .all(|key| key.contains("/s/") || key.contains("/k/")),
            "only sequence guards and idempotency records stay: {left:?}"
        );
    }

    #[tokio::test]
    async fn dequeue_waits_for_an_item() {
        let backend = backend();
        let consumer = backend.queue(name("q")).unwrap();
        let waiting = tokio::spawn(async move { consumer.dequeue().await });
        settle().await;
        assert!(!waiting.is_finished());
        backend
            .queue(name("q"))
            .unwrap()
            .enqueue("x")
            .await
            .unwrap();
        assert_eq!(within(waiting).await.unwrap().unwrap(), "x");
    }

    #[tokio::test]
    async fn a_dequeue_dropped_mid_claim_puts_the_item_back_in_front() {
        let backend = backend();
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        q.enqueue("y").await.unwrap();
        let key = "/queue/q/i/00000/0000000000000000";
        let created = |kv: &MemoryKv| {
            let kv = kv.clone();
            async move { kv.range(Range::key(key)).await.unwrap().kvs[0].create_revision }
        };
        let before = created(backend.kv()).await;
        {
            // Polled without letting the spawned claim run, then dropped: the claim
            // completes afterwards with nobody to hand the item to.
            let dequeue = q.dequeue();
            futures::pin_mut!(dequeue);
            for _ in 0..8 {
                assert!(futures::poll!(dequeue.as_mut()).is_pending());
            }
        }
        settle().await;
        assert_eq!(q.len().await.unwrap(), 2);
        assert!(
            created(backend.kv()).await > before,
            "the item was claimed and put back"
        );
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "x");
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "y");
    }

    #[tokio::test]
    async fn a_claim_whose_reply_is_lost_still_delivers_its_item_once() {
        for how in [TxnFault::ReplyLost, TxnFault::NotApplied] {
            let backend = flaky_backend();
            let q = backend.queue(name("q")).unwrap();
            q.enqueue("x").await.unwrap();
            q.enqueue("y").await.unwrap();
            // The claim's first three attempts fail (the first one applied, with
            // `ReplyLost`, so the later ones find its in-flight record).
            backend.kv().fail_txns(3, how);
            assert_eq!(
                within(q.try_dequeue()).await.unwrap().as_deref(),
                Some(&b"x"[..]),
                "{how:?}"
            );
            assert_eq!(q.try_dequeue().await.unwrap().as_deref(), Some(&b"y"[..]));
            assert_eq!(q.try_dequeue().await.unwrap(), None);
            // The in-flight records are deleted in the background once delivered.
            within(async {
                while keys(&**backend.kv())
                    .await
                    .iter()
                    .any(|k| !k.contains("/s/") && !k.contains("/k/"))
                {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
            .await;
        }
    }

    #[tokio::test]
    async fn an_enqueue_whose_reply_is_lost_appends_its_item_once() {
        for how in [TxnFault::ReplyLost, TxnFault::NotApplied] {
            let backend = flaky_backend();
            let q = backend.queue(name("q")).unwrap();
            // The first three attempts fail (the first applied, with `ReplyLost`, so
            // the later ones find its idempotency record).
            backend.kv().fail_txns(3, how);
            within(q.enqueue("x")).await.unwrap();
            let key = distsync_core::queue::IdempotencyKey::new("job-1").unwrap();
            backend.kv().fail_txns(3, how);
            let enqueued = within(q.enqueue_once(&key, "y", 0)).await.unwrap();
            assert_eq!(enqueued, distsync_core::queue::Enqueued::New, "{how:?}");
            assert_eq!(q.len().await.unwrap(), 2, "{how:?}");
            assert_eq!(q.try_dequeue().await.unwrap().as_deref(), Some(&b"x"[..]));
            assert_eq!(q.try_dequeue().await.unwrap().as_deref(), Some(&b"y"[..]));
        }
    }

    #[tokio::test]
    async fn a_key_enqueues_once_within_its_window_on_its_own_queue() {
        let backend = backend();
        let q = backend.queue(name("q")).unwrap();
        let other = backend.queue(name("other")).unwrap();
        let key = distsync_core::queue::IdempotencyKey::new("order-7:charge").unwrap();
        async fn once(
            q: &dyn distsync_core::Queue,
            key: &distsync_core::queue::IdempotencyKey,
            item: &'static str,
        ) -> distsync_core::queue::Enqueued {
            q.enqueue_once(key, item, 3).await.unwrap()
        }
        assert_eq!(
            once(&*q, &key, "a").await,
            distsync_core::queue::Enqueued::New
        );
        assert_eq!(
            once(&*q, &key, "b").await,
            distsync_core::queue::Enqueued::Duplicate
        );
        assert_eq!(
            once(&*other, &key, "c").await,
            distsync_core::queue::Enqueued::New
        );
        assert_eq!(q.try_dequeue().await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(q.try_dequeue().await.unwrap(), None);
        // Consumed, the key is still remembered within the window.
        assert_eq!(
            once(&*q, &key, "d").await,
            distsync_core::queue::Enqueued::Duplicate
        );
        assert_eq!(q.len().await.unwrap(), 0);
        // The record expires with its lease.
        let records = backend
            .kv()
            .range(Range::prefix("/queue/q/k/"))
            .await
            .unwrap();
        assert_eq!(records.kvs.len(), 1);
        assert_ne!(records.kvs[0].lease, 0);
    }

    #[tokio::test]
    async fn a_put_back_during_a_leader_change_is_retried() {
        let backend = flaky_backend();
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        // The claim goes through, then the put-back fails four times.
        backend.kv().fail_txns_after(1, 4, TxnFault::ReplyLost);
        {
            let dequeue = q.dequeue();
            futures::pin_mut!(dequeue);
            assert!(futures::poll!(dequeue.as_mut()).is_pending());
        }
        within(async {
            while q.len().await.unwrap() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(q.len().await.unwrap(), 1, "put back once");
        assert_eq!(q.try_dequeue().await.unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(q.try_dequeue().await.unwrap(), None);
    }

    /// The waiter keys of queue `q`, oldest first.
    async fn waiters(kv: &MemoryKv) -> Vec<String> {
        let range = Range::prefix("/queue/q/w/").sorted(
            crate::kv::SortTarget::CreateRevision,
            crate::kv::SortOrder::Ascend,
            0,
        );
        let found = kv.range(range).await.unwrap();
        found.kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn one_waiting_consumer_is_woken_per_item_in_arrival_order() {
        let backend = backend();
        let mut consumers = Vec::new();
        for _ in 0..3 {
            let q = backend.queue(name("q")).unwrap();
            consumers.push(tokio::spawn(async move { q.dequeue().await }));
            settle().await;
        }
        let line = waiters(backend.kv()).await;
        assert_eq!(line.len(), 3);
        let producer = backend.queue(name("q")).unwrap();
        producer.enqueue("x").await.unwrap();
        settle().await;
        assert_eq!(
            consumers
                .iter()
                .map(|c| c.is_finished())
                .collect::<Vec<_>>(),
            [true, false, false],
            "only the oldest waiter is woken"
        );
        assert_eq!(
            waiters(backend.kv()).await,
            line[1..],
            "the others did not wake up and line up again"
        );
        producer.enqueue("y").await.unwrap();
        // Two consumers woken at once race for the first item: let one take it first.
        settle().await;
        producer.enqueue("z").await.unwrap();
        let mut taken = Vec::new();
        for consumer in consumers {
            taken.push(within(consumer).await.unwrap().unwrap());
        }
        assert_eq!(taken, ["x", "y", "z"]);
        assert!(waiters(backend.kv()).await.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_consumer_passes_its_wake_up_on() {
        let backend = backend();
        let q1 = backend.queue(name("q")).unwrap();
        let first = tokio::spawn(async move { q1.dequeue().await });
        settle().await;
        let q2 = backend.queue(name("q")).unwrap();
        let second = tokio::spawn(async move { q2.dequeue().await });
        settle().await;
        // The enqueue wakes the first waiter, which is cancelled before it runs.
        backend
            .queue(name("q"))
            .unwrap()
            .enqueue("x")
            .await
            .unwrap();
        first.abort();
        assert_eq!(within(second).await.unwrap().unwrap(), "x");
        settle().await;
        assert!(waiters(backend.kv()).await.is_empty());
    }

    #[tokio::test]
    async fn nested_names_and_other_primitives_of_the_same_name_do_not_interfere() {
        let backend = backend();
        let s = session(&backend).await;
        let lock = backend.locker(&s, name("q")).unwrap().lock().await.unwrap();
        backend.barrier(name("q")).unwrap().hold().await.unwrap();
        let stm = backend.stm().unwrap();
        stm.atomically(distsync_core::stm::Isolation::default(), |tx| async move {
            tx.put("q", "stm");
            Ok(())
        })
        .await
        .unwrap();
        let q = backend.queue(name("q")).unwrap();
        let nested = backend.queue(name("q/00001/x")).unwrap();
        for i in 0..4 {
            q.enqueue_with_priority(format!("q{i}"), 1).await.unwrap();
            nested.enqueue(format!("n{i}")).await.unwrap();
        }
        assert_eq!(q.len().await.unwrap(), 4);
        assert_eq!(nested.len().await.unwrap(), 4);
        for i in 0..4 {
            assert_eq!(q.try_dequeue().await.unwrap().unwrap(), format!("q{i}"));
            assert_eq!(
                nested.try_dequeue().await.unwrap().unwrap(),
                format!("n{i}")
            );
        }
        assert_eq!(q.try_dequeue().await.unwrap(), None);
        assert!(!lock.is_lost());
        assert_eq!(
            backend
                .locker(&s, name("q"))
                .unwrap()
                .contenders()
                .await
                .unwrap(),
            1
        );
        lock.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn every_key_is_under_the_namespace() {
        let backend = KvBackend::with_kv(MemoryKv::new(), "app/", crate::memory::capabilities());
        let consumer = backend.queue(name("jobs")).unwrap();
        let waiting = tokio::spawn(async move { consumer.dequeue().await });
        settle().await;
        let q = backend.queue(name("jobs")).unwrap();
        q.enqueue("a").await.unwrap();
        q.enqueue_with_priority("b", 3).await.unwrap();
        let mut seen = keys(&**backend.kv()).await;
        assert_eq!(within(waiting).await.unwrap().unwrap(), "a");
        seen.extend(keys(&**backend.kv()).await);
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|key| key.starts_with("app/")),
            "keys outside the namespace: {seen:?}"
        );
    }

    /// A session whose lease the store ended behind its back (expired while its process
    /// was starved or paused, before its keepalive noticed) is lost at the next
    /// receive, not a store error, and the item stays queued for another session.
    #[tokio::test]
    async fn a_receive_through_a_lease_the_store_ended_is_session_lost() {
        let backend = KvBackend::with_kv(MemoryKv::new(), "", crate::memory::capabilities());
        let s = session_of(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("a").await.unwrap();
        backend
            .kv()
            .lease_revoke(crate::kv::LeaseId::try_from(s.id().0).unwrap())
            .await
            .unwrap();
        let refused = q.try_receive(&s).await;
        assert!(
            matches!(refused, Err(distsync_core::Error::SessionLost)),
            "{refused:?}"
        );
        assert!(s.is_lost());
        let other = session_of(&backend).await;
        assert_eq!(q.try_receive(&other).await.unwrap().unwrap().item(), "a");
    }

    #[tokio::test]
    async fn receive_holds_ack_removes_nack_returns_to_its_place() {
        let backend = backend();
        let s = session(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        for item in ["a", "b", "c"] {
            q.enqueue(item).await.unwrap();
        }
        let a = q.try_receive(&s).await.unwrap().unwrap();
        assert_eq!((a.item().as_ref(), a.redeliveries()), (&b"a"[..], 0));
        assert_eq!(q.len().await.unwrap(), 2, "a held item is not counted");
        let b = q.receive(&s).await.unwrap();
        assert_eq!(b.item(), "b");
        // At-most-once dequeue skips held items too.
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "c");
        assert!(q.try_receive(&s).await.unwrap().is_none());
        a.nack().await.unwrap();
        let again = q.try_receive(&s).await.unwrap().unwrap();
        assert_eq!(
            (again.item().as_ref(), again.redeliveries()),
            (&b"a"[..], 1)
        );
        b.ack().await.unwrap();
        again.ack().await.unwrap();
        assert!(q.is_empty().await.unwrap());
        settle().await;
        let left = keys(&**backend.kv()).await;
        assert!(
            left.iter()
                .all(|key| key.contains("/s/") || key.contains("/k/")),
            "only sequence guards and idempotency records stay: {left:?}"
        );
    }

    #[tokio::test]
    async fn the_oldest_age_is_of_the_oldest_item_not_held() {
        let backend = backend();
        let s = session(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        assert_eq!(q.oldest_age().await.unwrap(), None);
        q.enqueue("a").await.unwrap();
        // Only to make the two items' ages differ measurably.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        q.enqueue_with_priority("b", 7).await.unwrap();
        let both = q.oldest_age().await.unwrap().unwrap();
        assert!(both >= std::time::Duration::from_millis(30), "{both:?}");
        let a = q.try_receive(&s).await.unwrap().unwrap();
        assert_eq!(a.item(), "a");
        let without_a = q.oldest_age().await.unwrap().unwrap();
        assert!(
            without_a < both,
            "a held item is not counted: {without_a:?}"
        );
        a.ack().await.unwrap();
        assert_eq!(q.try_dequeue().await.unwrap().unwrap(), "b");
        assert_eq!(q.oldest_age().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_nacked_item_keeps_its_place_among_priorities() {
        let backend = backend();
        let s = session(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue_with_priority("p1-a", 1).await.unwrap();
        q.enqueue_with_priority("p1-b", 1).await.unwrap();
        q.enqueue_with_priority("p2", 2).await.unwrap();
        let first = q.try_receive(&s).await.unwrap().unwrap();
        q.enqueue_with_priority("p0", 0).await.unwrap();
        first.nack().await.unwrap();
        let mut order = Vec::new();
        while let Some(item) = q.try_dequeue().await.unwrap() {
            order.push(item);
        }
        assert_eq!(order, ["p0", "p1-a", "p1-b", "p2"]);
    }

    #[tokio::test]
    async fn a_dropped_delivery_is_nacked() {
        let backend = backend();
        let s = session(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        drop(q.try_receive(&s).await.unwrap().unwrap());
        let again = within(q.receive(&s)).await.unwrap();
        assert_eq!(
            (again.item().as_ref(), again.redeliveries()),
            (&b"x"[..], 1)
        );
        again.ack().await.unwrap();
    }

    #[tokio::test]
    async fn a_receivers_session_end_returns_the_item_and_wakes_one_waiter() {
        let backend = backend();
        let [holder, s1, s2] = crate::recipes::testing::sessions::<3>(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        q.enqueue("y").await.unwrap();
        let held = q.try_receive(&holder).await.unwrap().unwrap();
        assert_eq!(held.item(), "x");
        let y = q.try_receive(&s1).await.unwrap().unwrap();
        let mut waiters = Vec::new();
        for s in [s1.clone(), s2.clone()] {
            let q = backend.queue(name("q")).unwrap();
            waiters.push(tokio::spawn(async move { q.receive(&s).await }));
            settle().await;
        }
        assert_eq!(self::waiters(backend.kv()).await.len(), 2);
        backend.revoke_session(holder.id()).await.unwrap();
        settle().await;
        assert_eq!(
            waiters.iter().map(|w| w.is_finished()).collect::<Vec<_>>(),
            [true, false],
            "the first waiter, and only it, gets the returned item"
        );
        let first = within(waiters.remove(0)).await.unwrap().unwrap();
        assert_eq!(
            (first.item().as_ref(), first.redeliveries()),
            (&b"x"[..], 1)
        );
        assert!(matches!(
            held.ack().await,
            Err(distsync_core::Error::SessionLost)
        ));
        // The second waiter is now first in line: a nack reaches it.
        y.nack().await.unwrap();
        let second = within(waiters.remove(0)).await.unwrap().unwrap();
        assert_eq!(
            (second.item().as_ref(), second.redeliveries()),
            (&b"y"[..], 1)
        );
        first.ack().await.unwrap();
        second.ack().await.unwrap();
        assert!(q.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn an_item_returned_while_a_departed_waiter_was_first_reaches_the_next() {
        let backend = backend();
        let [holder, receiver] = crate::recipes::testing::sessions::<2>(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        let held = q.try_receive(&holder).await.unwrap().unwrap();
        // The key of a waiter that has left already, first in line until its removal
        // (which runs in the background) comes.
        let departed = "/queue/q/w/departed";
        let put = crate::kv::Txn::when(vec![]).and_then(vec![crate::kv::TxnOp::put(
            departed,
            Bytes::from_static(b"gone"),
            0,
        )]);
        backend.kv().txn(put).await.unwrap();
        let waiting = {
            let q = backend.queue(name("q")).unwrap();
            tokio::spawn(async move { q.receive(&receiver).await })
        };
        settle().await;
        assert_eq!(
            waiters(backend.kv()).await.len(),
            2,
            "the receiver is in line"
        );
        // Returned while the departed key is first: it wakes no one yet.
        held.nack().await.unwrap();
        settle().await;
        assert!(!waiting.is_finished(), "woken before its turn");
        let remove =
            crate::kv::Txn::when(vec![]).and_then(vec![crate::kv::TxnOp::delete(departed)]);
        backend.kv().txn(remove).await.unwrap();
        let delivery = within(waiting).await.unwrap().unwrap();
        assert_eq!(
            (delivery.item().as_ref(), delivery.redeliveries()),
            (&b"x"[..], 1)
        );
        delivery.ack().await.unwrap();
        assert!(q.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_receive_holds_nothing() {
        let backend = backend();
        let s = session(&backend).await;
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("x").await.unwrap();
        {
            let receive = q.receive(&s);
            futures::pin_mut!(receive);
            for _ in 0..8 {
                let _ = futures::poll!(receive.as_mut());
            }
        }
        within(async {
            while q.len().await.unwrap() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        let again = q.try_receive(&s).await.unwrap().unwrap();
        assert_eq!(again.item(), "x");
        again.ack().await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_in_flight_record_is_put_back_at_its_place() {
        let backend = backend();
        let q = backend.queue(name("q")).unwrap();
        q.enqueue("first").await.unwrap();
        q.enqueue("second").await.unwrap();
        // A claim whose consumer died 20 minutes ago: its record, no item key.
        let twenty_minutes_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            - 20 * 60 * 1000;
        let call = format!("{twenty_minutes_ago:013}-{}", distsync_core::raw::call_id());
        let kv = backend.kv();
        let item = "/queue/q/i/00000/0000000000000000";
        let record = format!("/queue/q/c/{call}/00000/0000000000000000");
        let txn = crate::kv::Txn::default().and_then(vec![
            crate::kv::TxnOp::delete(item),
            crate::kv::TxnOp::put(&record, Bytes::from("first"), 0),
        ]);
        kv.txn(txn).await.unwrap();
        // A fresh record (a claim in progress) stays.
        let fresh = format!(
            "/queue/q/c/{}/00000/0000000000000009",
            super::claim_call_id()
        );
        kv.txn(
            crate::kv::Txn::default().and_then(vec![crate::kv::TxnOp::put(
                &fresh,
                Bytes::from("in flight"),
                0,
            )]),
        )
        .await
        .unwrap();
        let fresh_handle = backend.queue(name("q")).unwrap();
        assert_eq!(fresh_handle.try_dequeue().await.unwrap().unwrap(), "first");
        assert_eq!(fresh_handle.try_dequeue().await.unwrap().unwrap(), "second");
        assert!(fresh_handle.try_dequeue().await.unwrap().is_none());
        assert!(!keys(&**kv).await.contains(&record));
        assert!(keys(&**kv).await.contains(&fresh));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_consumers_take_each_item_once() {
        let backend = std::sync::Arc::new(backend());
        const PRODUCERS: usize = 3;
        const ITEMS: usize = 30;
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let q = backend.queue(name("q")).unwrap();
            producers.push(tokio::spawn(async move {
                for i in 0..ITEMS {
                    q.enqueue(format!("{p}-{i}")).await.unwrap();
                }
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..3 {
            let q = backend.queue(name("q")).unwrap();
            consumers.push(tokio::spawn(async move {
                let mut taken = Vec::new();
                for attempt in 0..PRODUCERS * ITEMS {
                    if attempt % 3 == c {
                        // Abandon a dequeue part-way now and then.
                        let dequeue = q.dequeue();
                        futures::pin_mut!(dequeue);
                        if let std::task::Poll::Ready(item) = futures::poll!(dequeue.as_mut()) {
                            taken.push(item.unwrap());
                        }
                        continue;
                    }
                    match q.try_dequeue().await.unwrap() {
                        Some(item) => taken.push(item),
                        None => tokio::task::yield_now().await,
                    }
                }
                taken
            }));
        }
        for producer in producers {
            within(producer).await.unwrap();
        }
        let mut taken = Vec::new();
        for consumer in consumers {
            taken.extend(within(consumer).await.unwrap());
        }
        let q = backend.queue(name("q")).unwrap();
        // Put-backs of abandoned claims run in the background: drain until all arrive.
        within(async {
            while taken.len() < PRODUCERS * ITEMS {
                match q.try_dequeue().await.unwrap() {
                    Some(item) => taken.push(item),
                    None => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        let distinct: BTreeSet<_> = taken.iter().cloned().collect();
        assert_eq!(distinct.len(), taken.len(), "an item was delivered twice");
        assert_eq!(taken.len(), PRODUCERS * ITEMS);
        assert!(q.try_dequeue().await.unwrap().is_none());
    }
}
