//! The durable queue: items are keys of the bucket, and a receiver's hold is a key of
//! its session, so a delivery ends with the consumer's session, not with a timer.
//!
//! # Why not a work-queue stream
//!
//! A JetStream work-queue stream with explicit acks hands a message out again when
//! its ack wait runs out, whatever became of the consumer: a slow but live consumer
//! loses its delivery to another one, and a crashed one keeps it for the whole ack
//! wait. A delivery here must end when the consumer's session ends, no earlier and
//! no later; it must also keep its place (priority, then arrival) through a `nack`,
//! which a stream's redelivery does not. So the queue lives in the bucket beside the
//! other primitives, with the session's per-key TTLs doing what the ack wait would.
//!
//! # Layout
//!
//! Every key of queue `<name>` is under `queue.<name>` (the name escaped as every
//! name, see `src/keys.rs`):
//!
//! | key | value | what |
//! |---|---|---|
//! | `queue.<name>.i.<priority %05d>.<id>` | the item | an item, written once: its place is its sequence |
//! | `queue.<name>.d.<id>` | the hold key of its last receive | its delivery record (the count in `Ds-Deliveries`) |
//! | `queue.<name>.p.<priority %05d>` | empty | a priority that may have items |
//! | `queue.<name>.q.<session>.<n>` | the item's key | a receiver's hold, on its session's TTL |
//! | `queue.<name>.c.<call id>` | the item | an item claimed by a `dequeue` call, not yet handed over |
//! | `queue.<name>.k.<idempotency key>` | the item's key | an `enqueue_once` record, for [`DEDUP_WINDOW`] (its TTL) |
//!
//! An item is never rewritten while it waits or is held, so its stream sequence is
//! its place among the items of its priority, and a `nack` or a session's end leaves
//! it there. What changes with each receive is its delivery record, which the
//! claims compare.
//!
//! # Reading the head of the queue
//!
//! A claim never reads the whole queue. It reads the priorities (the `p.` keys, in one
//! batched direct get, which also gives the stream's sequence the read starts at, or in
//! pages when they are many) and then, from the highest priority (lowest number) on,
//! the items of one priority in stream order, a page at a time (a batched direct get
//! from a start sequence with `next_by_subj`; the first page as many messages as the
//! read wants items, each next one four times more, at most [`PAGE`], see
//! `src/scan.rs`), together with the delivery records of that page's items and the
//! holds they name (two batched direct gets of at most [`PAGE`] named keys). It stops
//! at the first items that no live hold names: two per claim of the handle under way,
//! at most [`HEAD`]. Its cost is the number of held items and of tombstones ahead of
//! the first free one, not the queue's length: an acknowledged item's tombstone lives
//! [`TOMBSTONE_TTL`], as the evidence an ack or a repeated enqueue needs is kept on the
//! delivery record, which no claim walks. A dequeue's read leaves the records out
//! (see [`Records::Unread`]): its claim's compare does their work.
//!
//! A priority none of whose items are left has its `p.` key purged, compared with the
//! sequence the claim read, so an enqueue at that priority meanwhile keeps it. A page
//! carries no sequence it was answered at, and on a replicated bucket any replica
//! answers it, one behind the stream among them: so where a walk of a priority ends,
//! the stream's leader is asked (a plain message get) for a message after it. One up
//! to the sequence the read started at means the replica was behind, and the page is
//! asked again: a consumer that found nothing waits for messages after that sequence
//! only, and would otherwise not see those items until the safety net; and a key
//! purged while items remain would hide them from every read and from [`Queue::len`].
//! Only when the leader has no message of the priority at all does its key go.
//!
//! The calls of one handle share the read in flight (see [`NatsQueue::queued`]).
//!
//! # Enqueue
//!
//! An enqueue writes, in one atomic batch, the item and its delivery record (each a
//! create, a compare on no message, under the call's own id) and its priority's
//! key. A repeat after a lost reply finds the keys taken by its own earlier attempt:
//! an item is appended once. The delivery record of a consumed item is a tombstone
//! that lives [`CALL_KEY_WINDOW`], so a repeat within that window does not append an
//! item consumed meanwhile. A repeat starts within the one-shot budget (at most 3 s),
//! so only a first attempt held back by a reconnecting client for longer than the
//! window could be appended again. `enqueue_once` adds its record (a create with the
//! 24-hour TTL) to the batch: a key seen within the window refuses the batch, and a
//! record naming this call's item is its own earlier attempt.
//!
//! # At-least-once delivery
//!
//! `receive` takes the first item (lowest priority number, then oldest) that no live
//! hold names, in one atomic batch: a rewrite of the item's delivery record compared
//! with its sequence (naming the new hold, the count one higher) and the creation of
//! a hold key naming the item, with the session's TTL, which the session then renews
//! as its other keys. Of two receivers of one item only one batch passes; the other
//! has written nothing and tries the next item, after a pause of a random part of its
//! lost attempt's duration ([`Contention`]): consumers that read one head would
//! otherwise all race for each of its items at once, and the stream's work for one
//! item would grow with the number of consumers. The next item, not a random one: the
//! first deliveries follow queue order (a receiver tries an item only once it lost
//! every item before it). A `dequeue`'s claims do the same. `ack` purges the item, its record
//! and the hold in one atomic batch, the record and the hold each compared with its
//! sequence (the hold's as the session last renewed it); `nack` purges the hold; the
//! session's end (a crash, a partition past the TTL, a revoke) ends the hold key
//! with the session's other keys, and the item, never moved, is free again at its
//! place, its count one higher. An ack whose reply was lost looks at the record's
//! tombstone: one written by this hold's ack answers `Ok`, else the session ended
//! first. The hold leaves the session's renewals as the ack starts (a renewal of a
//! purged key would end the session), so an ack that keeps failing returns the item
//! a TTL later. A receive dropped after its batch may have landed ends the hold in
//! the background, as a nack: a tombstone compared with no message refuses a batch
//! still on its way, else the hold is purged.
//!
//! # Dequeue: delivered once, never lost
//!
//! A `dequeue` claims the first item no hold names in one atomic batch: a purge of
//! the item and of its delivery record, the record compared with its sequence (so a
//! receive or another claim refuses it), and a fresh in-flight record `c.<id>`
//! holding the item. It returns the item and purges the record in the background.
//!
//! The batch is sent by a task of its own, so its answer is never lost with the
//! call. A call dropped while its claim is on its way (a caller's timeout) leaves the
//! answer to that task: a claim that landed is kept by the handle (see [`Kept`]) and
//! the handle's next `dequeue` or `try_dequeue` returns it at once, before anything
//! else, as the call would have. The item was the first free one when it was
//! claimed, so a lone consumer still gets the items in order, and concurrent
//! consumers are in no order among themselves anyway. A kept claim that no dequeue
//! of the handle takes within [`KEEP_WINDOW`], or that the handle still keeps when it
//! is dropped, is put back.
//!
//! A claim whose answer is unknown (a transient failure: a lost reply, a reconnect)
//! may still land: the call reads its record before it claims again, and returns the
//! item if it is there. At the call's end every such record still unknown is put
//! back: a tombstone written to its key, compared with no message, refuses a claim
//! still on its way (a reconnecting client sends what it held back); refused itself,
//! it means the record is there, and the record is put back as the item in one batch
//! compared with the record. On a replicated bucket the refusal may come while the
//! claim is still on its way (the stream's leader refuses a compare on a key with a
//! write in flight, without naming its sequence): a read that does not show the record
//! yet is asked again, never taken for a claim that did not land, which would leave
//! the item in a record no one puts back. A put-back item is written anew, its count
//! on the item and on its record, so it goes behind the items of its priority that
//! wait: the place of an item a consumer took and gave up on is not kept (only a
//! receive's `nack` keeps it).
//!
//! A record outlives its call only if the process dies between the claim and the
//! purge, or the store stays unreachable past the clean-up's budget. A consumer of the
//! queue puts such a record back once it is older than the URL's `stale_claim=` (by
//! default [`STALE_CLAIM`]) on the server's clock, as every store puts back its stale
//! in-flight records ([`ClaimSweeps`] says when): its item is never lost, and comes
//! again only if its dequeue had returned it.
//!
//! A sweep puts its stale records back in the order of their claims, which is their
//! records' stream sequences (a record is written once, by its claim's batch), whatever
//! order the listing answered in. Each put-back writes its item at the stream's end, so
//! the items of several records of one priority that are stale together (as on a
//! quiesced source) wait behind that priority's other items in the order they left the
//! queue, and are delivered again in it: the order the export lists them in (see
//! `src/export.rs`).
//!
//! # Waiting
//!
//! Each queue handle follows every message of the queue's keys with one watch (a
//! JetStream consumer, which the server makes and deletes at a price: one per handle,
//! not one per wait), started from the sequence a read of the head was made at, the
//! stream's last sequence read before its items. A consumer that finds nothing to take waits
//! until the follower has seen an item written or a hold ended after that sequence
//! (so nothing written after the read is missed), the oldest in-flight record the
//! handle's last sweep left comes due, or a safety net of 5 s passes, and looks again.
//! The waiters of one handle share one read, so a change costs one read per handle,
//! not one per waiter; across handles (processes) every waiting handle reads again on
//! each change.
//!
//! # Ages
//!
//! An item's enqueue time is its message's time stamp, on the server's clock (see
//! `src/clock.rs`): a receive rewrites the item's delivery record, never the item, so
//! the stamp stays the enqueue's through deliveries and `nack`s. A claim carries it
//! onto the in-flight record, and a put-back onto the item written anew
//! ([`ENQUEUED_HEADER`]), so an item taken and given up on keeps its age though not its
//! place. [`Queue::oldest_age`] reads every waiting item, as [`Queue::len`] does, then
//! the server's clock.
//!
//! [`STALE_CLAIM`]: distsync_core::queue::STALE_CLAIM

use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::Make;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::delivery::{Delivery, Settle};
use distsync_core::queue::{AppendKey, Enqueued, CALL_KEY_WINDOW, DEDUP_WINDOW};
use distsync_core::raw::locked;
use distsync_core::raw::{
    call_id, Claim, ClaimGuard, ClaimSweeps, CleanUp, Contention, Failure, Idempotence, Queue,
    RetryPolicy,
};
use distsync_core::{Error, Name, Result, Session};
use futures::future::{BoxFuture, Shared as SharedFuture};
use futures::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::keys::{self, Kind};
use crate::scan::PAGE;
use crate::session::{lease_of, tombstone, LeaseInner, TOMBSTONE_TTL};
use crate::shared::Shared;
use crate::store::{ApiError, BelowFloor, Entry, Published, Store, Write, FLOOR_PAUSE};

/// How many times `receive` delivered the item (on its delivery record, and on a
/// dequeue call's in-flight record).
const DELIVERIES_HEADER: &str = "Ds-Deliveries";
/// The hold key that acknowledged the item, on its delivery record's tombstone.
const HOLDER_HEADER: &str = "Ds-Holder";
/// The item key an in-flight record was claimed from.
const ITEM_HEADER: &str = "Ds-Item";
/// When the item was first enqueued (µs since the epoch, on the server's clock), on an
/// in-flight record and on an item put back from one, which are written later than
/// that: an item written at its enqueue has its own message's time stamp instead.
const ENQUEUED_HEADER: &str = "Ds-Enqueued";

/// The most free items a read of the head of a queue looks for: two per claim of
/// the handle under way (they share the read), so that a lone consumer reads little.
const HEAD: usize = 16;

/// How long a waiting consumer waits for a change before it looks again anyway.
const SAFETY_NET: Duration = Duration::from_secs(5);

/// The pause before a queue's follower watches again after its watch ended.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// How long a claim of a dropped dequeue call waits for the handle's next dequeue
/// before it is put back: long enough for a caller that retries a timed-out dequeue
/// at once, short enough that an item does not hide from other consumers behind a
/// handle that stopped dequeueing.
const KEEP_WINDOW: Duration = Duration::from_secs(1);

/// How long a put-back or the purge of a delivered item's record rides out transient
/// failures.
const CLEANUP_BUDGET: Duration = Duration::from_secs(600);

/// The queue `name`.
pub(crate) struct NatsQueue {
    shared: Arc<Shared>,
    name: Name,
    /// `queue.<name>`.
    root: String,
    /// The follower of the queue's keys, once a consumer of this handle waited.
    changes: OnceLock<Changes>,
    /// The read of the head in flight or last made (see [`NatsQueue::queued`]).
    /// Indexed by [`Records`]: a dequeue's reads do not read delivery records.
    listing: [std::sync::Mutex<Option<Listing>>; 2],
    /// Where reads of each priority start (see [`Floors`]).
    floors: Floors,
    /// How many claims (receives and dequeues) of this handle are under way.
    claims: AtomicUsize,
    /// The landed claims of this handle's dropped dequeue calls.
    kept: Arc<Kept>,
    /// When this handle looks for the in-flight records of dequeues that never
    /// finished.
    sweeps: ClaimSweeps,
    /// How old an in-flight record is when its dequeue counts as never finished: the
    /// URL's `stale_claim=`, by default [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM).
    stale_after: Duration,
}

impl Drop for NatsQueue {
    fn drop(&mut self) {
        self.kept.close();
    }
}

/// A claim under way on a handle, counted in [`NatsQueue::claims`] while it lives.
struct ClaimUnderWay<'q>(&'q AtomicUsize);

impl<'q> ClaimUnderWay<'q> {
    fn new(claims: &'q AtomicUsize) -> Self {
        claims.fetch_add(1, Ordering::Relaxed);
        Self(claims)
    }
}

impl Drop for ClaimUnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per priority, a sequence below which a read of this handle found no item but
/// consumed ones: items are never rewritten and new ones (and put-back ones) are
/// written at the stream's end, so no item is ever below it again, and reads start
/// there rather than walk the tombstones of items consumed lately.
type Floors = Arc<std::sync::Mutex<std::collections::HashMap<u16, u64>>>;

/// A read of the head of a queue shared by the calls of one handle, or whether its
/// error was transient and the error.
type Listing = SharedFuture<BoxFuture<'static, std::result::Result<Arc<Head>, (bool, String)>>>;

/// The head of a queue: its first free items in queue order, the queue's last
/// sequence read before them, and whether more items may follow those (the read
/// stopped at [`HEAD`] items).
struct Head {
    items: Vec<Item>,
    last: u64,
    full: bool,
    /// The items a claim of this handle tried: each is tried by one claim of the
    /// handle, so that its concurrent consumers do not all race for the first item.
    tried: std::sync::Mutex<Vec<bool>>,
}

impl Head {
    fn new(items: Vec<Item>, last: u64, full: bool) -> Self {
        let tried = std::sync::Mutex::new(vec![false; items.len()]);
        Self {
            items,
            last,
            full,
            tried,
        }
    }

    /// The items no claim of this handle tried yet, each marked tried as it is
    /// handed out, in queue order.
    fn untried(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().enumerate().filter_map(|(at, item)| {
            let mut tried = locked(&self.tried);
            let fresh = !std::mem::replace(&mut tried[at], true);
            fresh.then_some(item)
        })
    }
}

/// The task that follows a queue's keys for one handle ([`follow`], see the module
/// docs, "Waiting"), aborted when the handle is dropped, and the last sequence it saw.
struct Changes {
    receiver: watch::Receiver<u64>,
    /// Held for its drop, which aborts the task.
    _task: AbortOnDropHandle<()>,
}

/// Follows the messages of the queue's keys (under `root`) from the sequence `from`
/// on, sending to `seen` the sequence of each that may make an item takeable, until
/// it is aborted; a watch that fails is made again from the sequence after the last
/// one seen.
async fn follow(shared: Arc<Shared>, root: String, mut from: u64, seen: watch::Sender<u64>) {
    let filter = format!("{root}.>");
    let (items, holds) = (format!("{root}.i."), format!("{root}.q."));
    // Only what may make an item takeable wakes the waiters: an item written (an
    // enqueue, a put-back) or a hold ended.
    let wakes = |entry: &Entry| {
        (entry.live() && entry.key.starts_with(&items))
            || (!entry.live() && entry.key.starts_with(&holds))
    };
    loop {
        let watched = RetryPolicy::default()
            .wait("following a queue", None, || {
                shared.store.watch(&filter, from)
            })
            .await;
        match watched {
            Ok(mut events) => {
                while let Some(Ok(entry)) = events.next().await {
                    from = entry.seq + 1;
                    if wakes(&entry) {
                        seen.send_replace(entry.seq);
                    }
                }
                // A watch the server ends at once is not remade in a tight loop.
                tokio::time::sleep(REWATCH_PAUSE).await;
            }
            Err(error) => {
                tracing::debug!(filter, %error, "following a queue failed; waiters look again after the safety net");
                tokio::time::sleep(SAFETY_NET).await;
            }
        }
    }
}

/// An item as a read of the head shows it: its key, sequence and value, and its
/// delivery record's sequence (0: none) and count.
#[derive(Clone, Debug)]
struct Item {
    key: String,
    seq: u64,
    record: String,
    record_seq: u64,
    deliveries: u32,
    value: Bytes,
    /// Whether the record was read; if not, its sequence and count are the ones the
    /// item's own batch wrote (see [`Records::Unread`]).
    checked: bool,
    /// When it was enqueued, on the server's clock (`None`: its message carries no
    /// readable time).
    enqueued_us: Option<u64>,
}

impl From<&Item> for Entry {
    fn from(item: &Item) -> Self {
        Self {
            key: item.key.clone(),
            seq: item.seq,
            op: crate::store::Op::Put,
            value: item.value.clone(),
            headers: None,
        }
    }
}

/// Whether a read of the head reads the delivery records of its items.
///
/// A dequeue's reads do not ([`Records::Unread`]): an item and its record are
/// written in one atomic batch (an enqueue, a put-back), the record just before the
/// item, and only a receive or a consumption writes the record again. So a claim
/// compared with the record at the sequence before the item's passes only if no
/// receive ever held the item and no one consumed it, which is what a read of the
/// record would have told; its count is on the item (a put-back writes it there
/// too). A claim refused that way reads the record, as a receive's read does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Records {
    Read = 0,
    Unread = 1,
}

/// When the item `entry` holds was enqueued: its [`ENQUEUED_HEADER`] where it was
/// written after that (put back), else its message's own time stamp.
fn enqueued_of(entry: &Entry) -> Option<u64> {
    match entry.header(ENQUEUED_HEADER) {
        Some(enqueued) => enqueued.parse().ok(),
        None => entry.stamp_us().ok(),
    }
}

/// The count of deliveries an entry's header gives (0 without one).
fn deliveries_of(entry: &Entry) -> u32 {
    entry
        .header(DELIVERIES_HEADER)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// The id of an item key (`queue.<name>.i.<priority>.<id>`): its last token.
pub(crate) fn id_of(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

impl NatsQueue {
    fn new(shared: &Arc<Shared>, name: Name, stale_after: Duration) -> Self {
        Self {
            root: keys::key(Kind::Queue, &name),
            shared: Arc::clone(shared),
            name,
            changes: OnceLock::new(),
            listing: [std::sync::Mutex::new(None), std::sync::Mutex::new(None)],
            floors: Floors::default(),
            claims: AtomicUsize::new(0),
            kept: Arc::new(Kept {
                shared: Arc::clone(shared),
                state: std::sync::Mutex::default(),
                added: Notify::new(),
                orphans_done: Notify::new(),
            }),
            sweeps: ClaimSweeps::default(),
            stale_after,
        }
    }

    /// Puts back the items of in-flight records older than `stale_after` on the
    /// server's clock, in the order of their claims (see the module docs, "Dequeue");
    /// returns how long until the oldest record left comes due, if any is left. The
    /// clock is read only when there is a record.
    async fn sweep(&self) -> Result<Option<Duration>> {
        let store = &self.shared.store;
        let records = [format!("{}.c.*", self.root)];
        let (listed, _) = store.list(&records).await?;
        if !listed.iter().any(Entry::live) {
            return Ok(None);
        }
        let (now, mut listed) = crate::clock::now_with(store, &records).await?;
        listed.sort_unstable_by_key(|record| record.seq);
        let stale = u64::try_from(self.stale_after.as_micros()).unwrap_or(u64::MAX);
        let mut next: Option<u64> = None;
        for record in listed.iter().filter(|entry| entry.live()) {
            let age = now.saturating_sub(record.stamp_us()?);
            if age < stale {
                let left = stale - age;
                next = Some(next.map_or(left, |next| next.min(left)));
                continue;
            }
            tracing::warn!(
                queue = %self.name,
                record = %record.key,
                "putting back the item of a dequeue that never finished",
            );
            put_back(&self.shared, &record.key).await?;
        }
        Ok(next.map(Duration::from_micros))
    }

    /// The head of the queue: its first [`HEAD`] items no live hold names.
    ///
    /// The calls of one handle share the read in flight, which runs to its end even
    /// when they are dropped: a consumer whose calls are cancelled at once (a short
    /// timeout in a loop) sends one read at a time, not one per call, and the waiters
    /// woken by one change read once. A read that started before the call is as good
    /// as a fresh one: a claim compares what it takes, and a wait starts from the
    /// read's own sequence.
    async fn queued(&self, records: Records) -> Result<Arc<Head>> {
        let listing = {
            let mut slot = locked(&self.listing[records as usize]);
            match slot.as_ref() {
                Some(listing) if listing.peek().is_none() => listing.clone(),
                _ => {
                    let (shared, root) = (Arc::clone(&self.shared), self.root.clone());
                    let floors = Arc::clone(&self.floors);
                    let claims = self.claims.load(Ordering::Relaxed);
                    let want = claims.saturating_mul(2).clamp(2, HEAD);
                    let task = tokio::spawn(async move {
                        read_head(&shared, &root, want, &floors, records).await
                    });
                    let listing: Listing = async move {
                        match task.await {
                            Ok(Ok(listed)) => Ok(Arc::new(listed)),
                            Ok(Err(error)) => Err((error.is_transient(), error.to_string())),
                            Err(error) => Err((false, error.to_string())),
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some(listing.clone());
                    listing
                }
            }
        };
        match listing.await {
            Ok(head) => Ok(head),
            Err((true, error)) => Err(Error::connection(crate::BACKEND, error)),
            Err((false, error)) => Err(Error::backend(crate::BACKEND, error)),
        }
    }

    /// The last sequence the handle's follower of the queue's keys saw, starting the
    /// follower from `from` if it has not started.
    fn changes(&self, from: u64) -> watch::Receiver<u64> {
        self.changes
            .get_or_init(|| {
                let (seen, receiver) = watch::channel(from.saturating_sub(1));
                let root = self.root.clone();
                let follower = tokio::spawn(follow(Arc::clone(&self.shared), root, from, seen));
                Changes {
                    receiver,
                    _task: AbortOnDropHandle::new(follower),
                }
            })
            .receiver
            .clone()
    }

    /// Waits until a key of the queue changes after the sequence `last`, the oldest
    /// in-flight record the handle's last sweep left comes due (its put-back writes
    /// nothing until a sweep runs), or the safety net passes.
    async fn changed_after(&self, last: u64, lost: Option<&CancellationToken>) -> Result<()> {
        let mut seen = self.changes(last + 1);
        let look_again = self
            .sweeps
            .next_in()
            .map_or(SAFETY_NET, |due| due.min(SAFETY_NET));
        let lost = async {
            match lost {
                Some(lost) => lost.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = lost => Err(Error::SessionLost),
            () = tokio::time::sleep(look_again) => Ok(()),
            changed = seen.wait_for(|seen| *seen > last) => match changed {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::backend(crate::BACKEND, "the queue's follower ended")),
            },
        }
    }

    /// Every waiting item (no live hold names it), in queue order.
    async fn waiting(&self) -> Result<Head> {
        let (shared, floors) = (&self.shared, &self.floors);
        read_head(shared, &self.root, usize::MAX, floors, Records::Read).await
    }

    /// One dequeue attempt of `call`: a claim kept by the handle (see [`Kept`]) if
    /// there is one, else the item of one of the call's claims whose answer was lost,
    /// if it landed, else a claim of the first queued item; the read's sequence when
    /// there is nothing to claim.
    async fn claim(&self, call: &Call) -> Result<std::result::Result<Claimed, u64>> {
        self.kept.settled(self.shared.store.request_timeout).await;
        if let Some(claimed) = self.kept.take() {
            return Ok(Ok(claimed));
        }
        self.sweeps.sweep_if_due(&self.root, || self.sweep()).await;
        let store = &self.shared.store;
        let unknown = call.records().clone();
        for record in unknown {
            if let Some(entry) = store.last(&record).await?.filter(Entry::live) {
                call.settled(&record);
                return Ok(Ok(Claimed {
                    record,
                    value: entry.value,
                    seq: entry.seq,
                }));
            }
            // Still unknown: a claim held back by a reconnecting client may land
            // later, which the put-back at the call's end stops.
        }
        let _claim = ClaimUnderWay::new(&self.claims);
        // After a head read without records taken by others, the next read reads
        // them: the items it stopped at may all be held, which only records tell.
        let mut records = Records::Unread;
        let mut contention = Contention::default();
        loop {
            let head = self.queued(records).await?;
            records = Records::Read;
            let mut refused = Vec::new();
            for item in head.untried() {
                let attempt = tokio::time::Instant::now();
                match self.claim_item(call, item).await? {
                    Some(claimed) => return Ok(Ok(claimed)),
                    None => {
                        refused.push(item);
                        contention.lost(attempt.elapsed()).await;
                    }
                }
            }
            // A full head taken by others may hide free items behind it: read again
            // (with records).
            if head.full {
                continue;
            }
            // A claim of an item whose record was not read is refused, too, when a
            // receive rewrote the record: the records of the refused items tell
            // which of them are free, in one read.
            let unchecked = refused
                .iter()
                .filter(|item| !item.checked)
                .map(|item| Entry::from(*item))
                .collect();
            let mut free = Vec::new();
            free_items(&self.shared, &self.root, unchecked, usize::MAX, &mut free).await?;
            for item in &free {
                if let Some(claimed) = self.claim_item(call, item).await? {
                    return Ok(Ok(claimed));
                }
            }
            return Ok(Err(head.last));
        }
    }

    /// Claims `item` for `call` under a fresh in-flight record, in one atomic batch
    /// sent by a task of its own (see [`PendingClaim`]); `None` when another consumer
    /// took the item first.
    async fn claim_item(&self, call: &Call, item: &Item) -> Result<Option<Claimed>> {
        let record = format!("{}.c.{}", self.root, call_id());
        let writes = vec![
            tombstone(item.key.as_str(), item.seq),
            Write::purge(item.record.as_str())
                .if_at(item.record_seq)
                .ttl(CALL_KEY_WINDOW),
            enqueued(
                Write::put(record.as_str(), item.value.clone())
                    .header(ITEM_HEADER, &item.key)
                    .header(DELIVERIES_HEADER, &item.deliveries.to_string())
                    .if_at(0),
                item.enqueued_us,
            ),
        ];
        let unseen = Unseen {
            kept: Arc::clone(&self.kept),
            record: record.clone(),
            value: item.value.clone(),
        };
        let (send, answer) = oneshot::channel();
        let slot = Arc::new(std::sync::Mutex::new(Slot::Waiting));
        let mut pending = PendingClaim {
            answer,
            slot: Arc::clone(&slot),
            unseen: Some(unseen.clone()),
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut answerer = Answerer {
                send: Some(send),
                slot,
                unseen: Some(unseen),
            };
            let answer = shared
                .store
                .batch(writes)
                .await
                .and_then(Published::compared);
            answerer.answer(answer);
        });
        let answer = (&mut pending.answer).await;
        pending.unseen = None;
        match answer {
            Ok(Ok(Some(seq))) => Ok(Some(Claimed {
                record,
                value: item.value.clone(),
                seq,
            })),
            // Taken by another consumer since the read.
            Ok(Ok(None)) => Ok(None),
            Ok(Err(error)) => {
                // Only a transient failure leaves this claim's answer unknown.
                if error.is_transient() {
                    call.records().push(record);
                }
                Err(error)
            }
            // The task ended without an answer (its runtime is shutting down) and
            // put the record back itself.
            Err(_) => Err(Error::backend(
                crate::BACKEND,
                "a claim's task ended without its answer",
            )),
        }
    }

    /// Receives the first queued item through `lease`; the read's sequence when
    /// there is none to take. A one-shot call (`once`) gives up on a failing store
    /// within the one-shot budget.
    async fn hold_first(
        &self,
        session: &Session,
        lease: &Arc<LeaseInner>,
        once: bool,
    ) -> Result<std::result::Result<Delivery, u64>> {
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        self.sweeps.sweep_if_due(&self.root, || self.sweep()).await;
        let _claim = ClaimUnderWay::new(&self.claims);
        let mut contention = Contention::default();
        loop {
            let head = self.queued(Records::Read).await?;
            for item in head.untried() {
                let attempt = tokio::time::Instant::now();
                if let Some(delivery) = self.hold(session, lease, item, once).await? {
                    return Ok(Ok(delivery));
                }
                contention.lost(attempt.elapsed()).await;
            }
            // A full head taken by others may hide free items behind it: read again.
            if !head.full {
                return Ok(Err(head.last));
            }
        }
    }

    /// Holds `item` through `lease`, in one atomic batch (see the module docs,
    /// "At-least-once delivery"); `None` when another consumer took the item first.
    async fn hold(
        &self,
        session: &Session,
        lease: &Arc<LeaseInner>,
        item: &Item,
        once: bool,
    ) -> Result<Option<Delivery>> {
        let store = &self.shared.store;
        let line = keys::line(Kind::Queue, &self.name);
        let hold = keys::contender(&line, lease.id, lease.next_number());
        let value = Bytes::from(item.key.clone());
        // Until the session renews the hold, a call dropped or failing after the batch
        // may have landed ends the hold in the background (as a nack would).
        let pending = ClaimGuard::new(LeftBehind {
            shared: Arc::clone(&self.shared),
            key: hold.clone(),
            hold: true,
        });
        let writes = vec![
            Write::put(item.record.as_str(), Bytes::from(hold.clone()))
                .header(DELIVERIES_HEADER, &(item.deliveries + 1).to_string())
                .if_at(item.record_seq),
            Write::put(hold.as_str(), value.clone())
                .if_at(0)
                .ttl(lease.ttl),
        ];
        let seq = match store.batch(writes).await.and_then(Published::compared) {
            Ok(Some(seq)) => seq,
            Ok(None) => {
                pending.disarm();
                return Ok(None);
            }
            Err(error) if error.is_transient() => {
                // The batch may have landed: the hold key, fresh to this call, tells.
                let lost = lease.lost_token().cloned();
                let read = || store.last(&hold);
                let entry = if once {
                    RetryPolicy::within(store.request_timeout)
                        .one_shot("reading a hold", Idempotence::Idempotent, Failure::of, read)
                        .await?
                } else {
                    RetryPolicy::default()
                        .wait("reading a hold", lost.as_ref(), read)
                        .await?
                };
                match entry {
                    Some(entry) if entry.live() => entry.seq,
                    _ => return Ok(None),
                }
            }
            Err(error) => {
                pending.disarm();
                return Err(error);
            }
        };
        // The batch's last message is the hold's, and an atomic batch is stored at
        // consecutive sequences: the record's rewrite is the one before.
        let adopted = lease.adopt(&hold, value, seq, None).await;
        // Renewed by the session now, or purged by `adopt` when the session is over.
        pending.disarm();
        adopted?;
        let settle = NatsSettle {
            lease: Arc::clone(lease),
            hold,
            item: item.key.clone(),
            record: item.record.clone(),
            record_seq: seq - 1,
            forgotten: tokio::sync::OnceCell::new(),
        };
        Ok(Some(Delivery::new(
            item.value.clone(),
            item.deliveries,
            session,
            Box::new(settle),
        )))
    }

    /// Appends `item` at `priority` under a fresh key, and with `record` (an
    /// `enqueue_once` record, created in the same batch) if given; `false` when the
    /// record's key was seen within the window.
    async fn append(
        &self,
        item: Bytes,
        priority: u16,
        record: Option<(&str, u64)>,
    ) -> Result<bool> {
        let store = &self.shared.store;
        let key = format!("{}.i.{priority:05}.{}", self.root, call_id());
        let delivery = delivery_key(&self.root, id_of(&key));
        RetryPolicy::within(store.request_timeout)
            .one_shot("enqueue", Idempotence::Idempotent, Failure::of, || async {
                let mut writes = Vec::with_capacity(4);
                if let Some((record, expected)) = record {
                    writes.push(
                        Write::put(record, Bytes::from(key.clone()))
                            .ttl(DEDUP_WINDOW)
                            .if_at(expected),
                    );
                }
                writes.push(Write::put(priority_key(&self.root, priority), Bytes::new()));
                writes.push(Write::put(delivery.as_str(), Bytes::new()).if_at(0));
                writes.push(Write::put(key.as_str(), item.clone()).if_at(0));
                if store.batch(writes).await?.compared()?.is_some() {
                    return Ok(true);
                }
                // The call's own earlier attempt landed, or the record's key was seen.
                Ok(match record {
                    None => true,
                    Some((record, _)) => store
                        .last(record)
                        .await?
                        .is_some_and(|entry| entry.live() && entry.value == key.as_bytes()),
                })
            })
            .await
    }
}

/// The delivery record of the item `id` of the queue under `root`.
pub(crate) fn delivery_key(root: &str, id: &str) -> String {
    format!("{root}.d.{id}")
}

/// The root (`queue.<name>`) and priority of the item key `key`
/// (`queue.<name>.i.<priority>.<id>`); `None` for any other key.
pub(crate) fn item_place(key: &str) -> Option<(&str, u16)> {
    let parts = keys::parts(key)?;
    match parts.rest.as_slice() {
        ["i", priority, _id, ..] if parts.kind == Kind::Queue.token() => Some((
            &key[..parts.kind.len() + 1 + parts.name.len()],
            priority.parse().ok()?,
        )),
        _ => None,
    }
}

/// Whether `key` is a dequeue call's in-flight record (`queue.<name>.c.<call id>`).
pub(crate) fn is_in_flight_record(key: &str) -> bool {
    keys::parts(key)
        .is_some_and(|parts| parts.kind == Kind::Queue.token() && parts.rest.first() == Some(&"c"))
}

/// The item key the in-flight record `record` was claimed from, where a put-back
/// writes its item again; `None` for a record no claim wrote, which no put-back
/// restores.
pub(crate) fn claimed_from(record: &Entry) -> Option<&str> {
    record.header(ITEM_HEADER)
}

/// Where a live item stands, as its delivery record tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Consumed: an ack or a claim purges the record in the batch that purges the
    /// item, so an item seen live beside its record's tombstone was read before that
    /// batch and its record after it.
    Consumed,
    /// Held by a receiver: its record names a hold key that is live.
    Held,
    /// Free to take: no record (none written yet), or one naming no live hold.
    Free,
}

/// Where the item whose delivery record is `record` (`None`: none read) stands;
/// `live_hold` tells whether the hold key a record names (its value) is live.
pub(crate) fn standing(record: Option<&Entry>, live_hold: impl Fn(&Bytes) -> bool) -> Standing {
    match record {
        Some(record) if !record.live() => Standing::Consumed,
        Some(record) if !record.value.is_empty() && live_hold(&record.value) => Standing::Held,
        _ => Standing::Free,
    }
}

/// The key that says the queue under `root` may have items at `priority`.
fn priority_key(root: &str, priority: u16) -> String {
    format!("{root}.p.{priority:05}")
}

/// The priorities of the queue under `root` that may have items, highest first
/// (lowest number), each with its key's sequence, and the stream's sequence they were
/// read at (in pages when they are many, see [`Store::list`]).
async fn priorities(shared: &Shared, root: &str) -> Result<(Vec<(u16, u64)>, u64)> {
    let (entries, last) = shared.store.list(&[format!("{root}.p.*")]).await?;
    let mut priorities: Vec<(u16, u64)> = entries
        .iter()
        .filter(|entry| entry.live())
        .filter_map(|entry| Some((entry.key.rsplit('.').next()?.parse().ok()?, entry.seq)))
        .collect();
    priorities.sort_unstable();
    Ok((priorities, last))
}

/// The first `want` items of the queue under `root` that no live hold names, in
/// queue order (see the module docs), each priority read from its floor on.
async fn read_head(
    shared: &Shared,
    root: &str,
    want: usize,
    floors: &Floors,
    records: Records,
) -> Result<Head> {
    let store = &shared.store;
    // Every change after `last` (read before the items) wakes a waiter that found
    // nothing.
    let (priorities, last) = priorities(shared, root).await?;
    let mut items = Vec::new();
    for (priority, seq) in priorities {
        let filter = format!("{root}.i.{priority:05}.>");
        let floor = floor_of(floors, priority);
        let (mut from, mut any, mut first_live) = (floor, false, None);
        // Pages start small and grow fourfold: a head is read far more often than
        // walked, and what lies before its first free item is mostly a few tombstones
        // of items other handles consumed since this one's last read.
        let mut batch = want.min(PAGE);
        // Whether the stream's leader has no message of the priority from the floor on.
        let mut none_left = false;
        let mut pause = Duration::from_millis(1);
        let deadline = tokio::time::Instant::now() + store.request_timeout;
        loop {
            let page = store.page(&filter, from, batch).await?;
            batch = batch.saturating_mul(4).min(PAGE);
            from = page.next(from);
            any |= !page.entries.is_empty();
            let more = page.more;
            let live: Vec<Entry> = page.entries.into_iter().filter(Entry::live).collect();
            if first_live.is_none() {
                first_live = live.first().map(|entry| entry.seq);
                raise_floor(floors, priority, first_live.unwrap_or(from));
            }
            if records == Records::Unread {
                let unread = live.into_iter().take(want - items.len());
                items.extend(unread.map(|entry| Item {
                    record: delivery_key(root, id_of(&entry.key)),
                    // The record of the item's own batch, just before it.
                    record_seq: entry.seq - 1,
                    deliveries: deliveries_of(&entry),
                    enqueued_us: enqueued_of(&entry),
                    key: entry.key,
                    seq: entry.seq,
                    value: entry.value,
                    checked: false,
                }));
            } else {
                // The records of a page's items are read a few at a time, as a head
                // read stops once it has its items.
                for chunk in live.chunks(want.saturating_sub(items.len()).clamp(1, HEAD)) {
                    free_items(shared, root, chunk.to_vec(), want, &mut items).await?;
                    if items.len() >= want {
                        break;
                    }
                }
            }
            if items.len() >= want {
                return Ok(Head::new(items, last, true));
            }
            if more {
                continue;
            }
            // A page may come from a replica behind the stream: the walk's end is asked
            // again of the stream's leader (see the module docs). A message after
            // `last` is a write since the read, which the wait sees.
            match first_message(store, &filter, from).await? {
                Some(seq) if seq <= last => {
                    tracing::debug!(
                        filter,
                        from,
                        seq,
                        last,
                        "a page of a queue's head came from a replica behind the stream; asked again"
                    );
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(Error::connection(crate::BACKEND, BelowFloor));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FLOOR_PAUSE);
                }
                Some(_) => break,
                None => {
                    none_left = !any;
                    break;
                }
            }
        }
        if none_left {
            // No item is left at this priority: its key goes, unless an enqueue
            // rewrote it since it was read.
            let forget = tombstone(priority_key(root, priority), seq);
            store.publish(forget).await?.compared()?;
        }
    }
    Ok(Head::new(items, last, false))
}

/// The sequence of the stream leader's first message (a tombstone included) of a key
/// matching `filter` at the sequence `from` or after, if it has one: a plain (not
/// direct) get, which the leader alone answers, after every write it acknowledged.
async fn first_message(store: &Store, filter: &str, from: u64) -> Result<Option<u64>> {
    /// A stream message get's answer: the message, or the API's error.
    #[derive(serde::Deserialize)]
    struct Got {
        message: Option<Message>,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        seq: u64,
    }
    let subject = format!("$JS.API.STREAM.MSG.GET.{}", store.stream);
    let request = serde_json::json!({ "seq": from.max(1), "next_by_subj": store.subject(filter) });
    let answer = store
        .answer(store.client.request(subject, request.to_string().into()))
        .await?
        .map_err(crate::error::request_error)?;
    let got: Got = serde_json::from_slice(&answer.payload).map_err(|error| {
        Error::backend(
            crate::BACKEND,
            format!("an unreadable message get: {error}"),
        )
    })?;
    match (got.message, got.error) {
        (Some(message), _) => Ok(Some(message.seq)),
        (None, Some(error)) if error.code == 404 => Ok(None),
        // No leader yet, or none with a quorum.
        (None, Some(error)) if error.code == 503 => Err(Error::connection(
            crate::BACKEND,
            format!("a message get: {}", error.description),
        )),
        (None, Some(error)) => Err(Error::backend(
            crate::BACKEND,
            format!("a message get: {} ({})", error.description, error.code),
        )),
        (None, None) => Err(Error::backend(
            crate::BACKEND,
            "a message get answered neither a message nor an error",
        )),
    }
}

/// The floor of `priority` (see [`Floors`]): 1 when none was found yet.
fn floor_of(floors: &Floors, priority: u16) -> u64 {
    locked(floors).get(&priority).copied().unwrap_or(1)
}

/// Raises the floor of `priority` to `seq` (never lowers it: reads of one handle
/// may end out of order).
fn raise_floor(floors: &Floors, priority: u16, seq: u64) {
    let mut floors = locked(floors);
    let floor = floors.entry(priority).or_insert(1);
    *floor = (*floor).max(seq);
}

/// Appends to `items`, up to `want` of them, the items among `live` (one page of a
/// priority, in stream order) that no live hold names: their delivery records and
/// the holds these name are read in one batched direct get each.
async fn free_items(
    shared: &Shared,
    root: &str,
    live: Vec<Entry>,
    want: usize,
    items: &mut Vec<Item>,
) -> Result<()> {
    if live.is_empty() {
        return Ok(());
    }
    let store = &shared.store;
    let records: Vec<String> = live
        .iter()
        .map(|entry| delivery_key(root, id_of(&entry.key)))
        .collect();
    let (records, _) = store.list(&records).await?;
    let records: std::collections::HashMap<String, Entry> = records
        .into_iter()
        .map(|record| (record.key.clone(), record))
        .collect();
    let holds: Vec<String> = records
        .values()
        .filter(|record| record.live() && !record.value.is_empty())
        .filter_map(|record| std::str::from_utf8(&record.value).ok().map(str::to_owned))
        .collect();
    let held: std::collections::HashSet<Bytes> = if holds.is_empty() {
        std::collections::HashSet::new()
    } else {
        let (holds, _) = store.list(&holds).await?;
        holds
            .into_iter()
            .filter(Entry::live)
            .map(|hold| Bytes::from(hold.key))
            .collect()
    };
    for entry in live {
        if items.len() >= want {
            break;
        }
        let record = delivery_key(root, id_of(&entry.key));
        let known = records.get(&record);
        if standing(known, |hold| held.contains(hold)) != Standing::Free {
            continue;
        }
        let (record_seq, deliveries) =
            known.map_or((0, 0), |known| (known.seq, deliveries_of(known)));
        items.push(Item {
            enqueued_us: enqueued_of(&entry),
            key: entry.key,
            seq: entry.seq,
            record,
            record_seq,
            deliveries,
            value: entry.value,
            checked: true,
        });
    }
    Ok(())
}

/// A key a call left behind, ended in the background: a hold key a receive's batch
/// may have created, not yet renewed by its session, if the receive ends without
/// handing it to the session ([`abandon_hold`]); or an in-flight record that nobody
/// takes any more ([`put_back`]).
struct LeftBehind {
    shared: Arc<Shared>,
    key: String,
    /// Whether `key` is a hold key, else an in-flight record.
    hold: bool,
}

#[async_trait]
impl Claim for LeftBehind {
    fn put_back_clean_up(&self) -> CleanUp {
        let clean_up = if self.hold {
            CleanUp::new(
                "abandoning a dropped receive's hold",
                "it ends with its ttl",
            )
        } else {
            CleanUp::new(
                "putting back a dropped dequeue's item",
                "a consumer puts it back once its in-flight record is stale",
            )
        };
        clean_up.of(&self.key).within(CLEANUP_BUDGET)
    }

    async fn put_back(&self) -> Result<()> {
        if self.hold {
            abandon_hold(&self.shared, &self.key).await
        } else {
            put_back(&self.shared, &self.key).await
        }
    }
}

/// Ends the hold key `key` of a receive that did not hand it to its session (one
/// attempt, repeated as it is idempotent): the key is taken first ([`take_first`]),
/// and if the receive's batch landed, the hold is purged (the item is queued again,
/// its delivery counted, as after a nack).
async fn abandon_hold(shared: &Shared, key: &str) -> Result<()> {
    let store = &shared.store;
    if let Some(entry) = take_first(store, key).await? {
        let purge = tombstone(key, entry.seq);
        store.publish(purge).await?.compared()?;
    }
    Ok(())
}

/// Takes `key` by a tombstone compared with no message, which refuses a write to it
/// still on its way; refused itself, returns the key's last message if it is live
/// (`None` also when the tombstone landed).
///
/// The refusal means that a message of `key` is stored or on its way: the
/// leader of a replicated stream refuses a compare on a key another write to it is in
/// flight on (code 10164, without the sequence, so the read floor does not cover it),
/// and a replica may answer before it has that write. A read that shows no message is
/// behind it, and is a transient error: the caller asks again, and its compare, once
/// the write is stored, is refused at that write's sequence, which the read floor then
/// covers.
async fn take_first(store: &Store, key: &str) -> Result<Option<Entry>> {
    let tombstone = Write::purge(key).if_at(0).ttl(CALL_KEY_WINDOW);
    if store.publish(tombstone).await?.compared()?.is_some() {
        return Ok(None);
    }
    let entry = store.last(key).await?.ok_or_else(|| {
        Error::connection(
            crate::BACKEND,
            format!("{key}: the write that refused a compare is not readable yet"),
        )
    })?;
    Ok(Some(entry).filter(Entry::live))
}

/// An item claimed by a dequeue call: its in-flight record, its value and the
/// record's sequence.
struct Claimed {
    record: String,
    value: Bytes,
    seq: u64,
}

/// The claims of a handle's dequeue calls that ended (dropped: a caller's timeout)
/// while their batch was on its way, and that landed (see the module docs, "Dequeue"):
/// the handle's next dequeue returns the first of them at once, which costs less than
/// putting it back (three requests, and a place at the end of its priority) and
/// claiming another (four).
struct Kept {
    shared: Arc<Shared>,
    state: std::sync::Mutex<KeptState>,
    /// Notified once per claim kept, for a dequeue of the handle that waits.
    added: Notify,
    /// Notified when the last orphaned claim is answered.
    orphans_done: Notify,
}

/// The claims a handle keeps, oldest first, and whether the handle is gone.
#[derive(Default)]
struct KeptState {
    claims: std::collections::VecDeque<Claimed>,
    /// Set when the handle is dropped: a claim answered after that is put back.
    closed: bool,
    /// Claims on their way whose call was dropped first (see [`Kept::settled`]).
    orphans: usize,
}

impl Kept {
    fn state(&self) -> std::sync::MutexGuard<'_, KeptState> {
        locked(&self.state)
    }

    /// Keeps `claimed` for the handle's next dequeue, for at most [`KEEP_WINDOW`]; puts
    /// it back when the handle is gone.
    fn keep(self: &Arc<Self>, claimed: Claimed) {
        let record = claimed.record.clone();
        let mut state = self.state();
        if state.closed {
            drop(state);
            spawn_put_back(&self.shared, record);
            return;
        }
        state.claims.push_back(claimed);
        drop(state);
        self.added.notify_one();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let kept = Arc::clone(self);
            runtime.spawn(async move {
                tokio::time::sleep(KEEP_WINDOW).await;
                kept.expire(&record);
            });
        }
    }

    /// Counts a claim on its way whose call was dropped first (`1`), or its answer
    /// (`-1`, after the claim is kept or put back).
    fn orphan(&self, delta: isize) {
        let mut state = self.state();
        state.orphans = state.orphans.saturating_add_signed(delta);
        if state.orphans == 0 {
            drop(state);
            self.orphans_done.notify_waiters();
        }
    }

    /// Waits, at most `bound`, until no claim of a dropped call of the handle is on
    /// its way: a dequeue that follows one waits for its answer (one round trip)
    /// and returns its item if it landed, rather than claim the next item and leave
    /// the earlier one to a later call, so that a lone consumer whose calls time out
    /// still gets the items in order.
    async fn settled(&self, bound: Duration) {
        let done = self.orphans_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.state().orphans == 0 {
            return;
        }
        // Past the bound the claim's answer is a failure, which puts it back.
        let _ = tokio::time::timeout(bound, done).await;
    }

    /// The oldest claim kept, taken.
    fn take(&self) -> Option<Claimed> {
        self.state().claims.pop_front()
    }

    /// Puts the claim of `record` back if no dequeue took it.
    fn expire(&self, record: &str) {
        let mut state = self.state();
        let at = state.claims.iter().position(|kept| kept.record == record);
        if let Some(claimed) = at.and_then(|at| state.claims.remove(at)) {
            drop(state);
            spawn_put_back(&self.shared, claimed.record);
        }
    }

    /// Puts back every claim kept, and every one answered from now on.
    fn close(&self) {
        let claims = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.claims)
        };
        for claimed in claims {
            spawn_put_back(&self.shared, claimed.record);
        }
    }
}

/// What becomes of a claim whose answer its call did not see (the call was dropped
/// first): landed, it is kept for the handle's next dequeue; unknown (a transient
/// failure), it is put back; refused, nothing was written.
#[derive(Clone)]
struct Unseen {
    kept: Arc<Kept>,
    record: String,
    value: Bytes,
}

impl Unseen {
    fn settle(self, answer: Result<Option<u64>>) {
        match answer {
            Ok(Some(seq)) => self.kept.keep(Claimed {
                record: self.record,
                value: self.value,
                seq,
            }),
            Err(error) if error.is_transient() => spawn_put_back(&self.kept.shared, self.record),
            Ok(None) | Err(_) => {}
        }
    }
}

/// Where a claim's answer stands, shared by its call and the task that sends it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// On its way, its call waiting.
    Waiting,
    /// On its way, its call dropped: the task settles the answer.
    Orphan,
    /// Answered (to the call, or settled by the task).
    Done,
}

/// A claim's batch on its way, seen from its call (the batch is sent by a task of its
/// own): a call dropped first leaves the answer to the task ([`Answerer`]), or takes
/// one already sent.
struct PendingClaim {
    answer: oneshot::Receiver<Result<Option<u64>>>,
    slot: Arc<std::sync::Mutex<Slot>>,
    /// Set until the call reads the answer.
    unseen: Option<Unseen>,
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let Some(unseen) = self.unseen.take() else {
            return;
        };
        let mut slot = locked(&self.slot);
        match *slot {
            Slot::Waiting => {
                *slot = Slot::Orphan;
                drop(slot);
                unseen.kept.orphan(1);
            }
            // Sent before the call read it.
            Slot::Done => {
                drop(slot);
                if let Ok(answer) = self.answer.try_recv() {
                    unseen.settle(answer);
                }
            }
            Slot::Orphan => {}
        }
    }
}

/// The task side of a [`PendingClaim`]: sends the answer to the call, or settles it
/// when the call is gone; a task ended before its answer puts the record back.
struct Answerer {
    send: Option<oneshot::Sender<Result<Option<u64>>>>,
    slot: Arc<std::sync::Mutex<Slot>>,
    unseen: Option<Unseen>,
}

impl Answerer {
    fn answer(&mut self, answer: Result<Option<u64>>) {
        let (Some(send), Some(unseen)) = (self.send.take(), self.unseen.take()) else {
            return;
        };
        let mut slot = locked(&self.slot);
        if *slot == Slot::Orphan {
            *slot = Slot::Done;
            drop(slot);
            let kept = Arc::clone(&unseen.kept);
            unseen.settle(answer);
            kept.orphan(-1);
        } else {
            // The call waits (its drop takes the slot's lock first), so this is
            // received, by the call or by its drop.
            let _ = send.send(answer);
            *slot = Slot::Done;
        }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        let (Some(_), Some(unseen)) = (self.send.take(), self.unseen.take()) else {
            return;
        };
        let mut slot = locked(&self.slot);
        let orphan = *slot == Slot::Orphan;
        *slot = Slot::Done;
        drop(slot);
        let kept = Arc::clone(&unseen.kept);
        spawn_put_back(&kept.shared, unseen.record);
        if orphan {
            kept.orphan(-1);
        }
    }
}

/// A dequeue call: the records of its claims whose answers were lost (a transient
/// failure). Any of them may land later (a reconnecting client sends what it held
/// back), so each is put back when the call ends, whatever it returned.
struct Call {
    shared: Arc<Shared>,
    unknown: std::sync::Mutex<Vec<String>>,
}

impl Call {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            unknown: std::sync::Mutex::default(),
        }
    }

    /// The records whose claims' answers are unknown.
    fn records(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        locked(&self.unknown)
    }

    /// `record`'s claim landed and the call returns its item.
    fn settled(&self, record: &str) {
        self.records().retain(|unknown| unknown != record);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        for record in std::mem::take(&mut *self.records()) {
            spawn_put_back(&self.shared, record);
        }
    }
}

/// Puts the record `record` back in the background: a claim nobody takes any more.
fn spawn_put_back(shared: &Arc<Shared>, record: String) {
    drop(ClaimGuard::new(LeftBehind {
        shared: Arc::clone(shared),
        key: record,
        hold: false,
    }));
}

/// Puts the record `record` back as the item it was claimed from, behind the waiting
/// items of its priority (one attempt, repeated as it is idempotent). A claim may still be on its way (a
/// reconnecting client sends what it held back), so the record's key is taken first
/// ([`take_first`]): if the claim landed, its record is put back.
async fn put_back(shared: &Shared, record: &str) -> Result<()> {
    let store = &shared.store;
    let Some(entry) = take_first(store, record).await? else {
        return Ok(());
    };
    let Some(key) = entry.header(ITEM_HEADER).map(str::to_owned) else {
        return Ok(());
    };
    let Some((root, priority)) = item_place(&key) else {
        return Ok(());
    };
    // The item and its delivery record are written anew, its count kept; the compare
    // on the in-flight record makes this happen once.
    let writes = vec![
        Write::put(priority_key(root, priority), Bytes::new()),
        Write::put(delivery_key(root, id_of(&key)), Bytes::new())
            .header(DELIVERIES_HEADER, &deliveries_of(&entry).to_string()),
        enqueued(
            Write::put(key.as_str(), entry.value.clone())
                .header(DELIVERIES_HEADER, &deliveries_of(&entry).to_string()),
            enqueued_of(&entry),
        ),
        Write::purge(record).if_at(entry.seq).ttl(CALL_KEY_WINDOW),
    ];
    store.batch(writes).await?.compared()?;
    Ok(())
}

/// `write` carrying the item's enqueue time `enqueued_us`, if known.
fn enqueued(write: Write, enqueued_us: Option<u64>) -> Write {
    match enqueued_us {
        Some(enqueued) => write.header(ENQUEUED_HEADER, &enqueued.to_string()),
        None => write,
    }
}

/// Hands over the item of `claimed`: returns it, its record purged in the background.
fn hand_over(shared: &Arc<Shared>, claimed: Claimed) -> Bytes {
    let (shared, record, seq) = (Arc::clone(shared), claimed.record, claimed.seq);
    CleanUp::new(
        "forgetting a dequeued item's record",
        "a consumer delivers the item again once its in-flight record is stale",
    )
    .of(&record)
    .within(CLEANUP_BUDGET)
    .spawn(move |clean_up| async move {
        let purge = || async {
            let write = Write::purge(record.as_str())
                .if_at(seq)
                .ttl(CALL_KEY_WINDOW);
            shared.store.publish(write).await?.compared()
        };
        clean_up.retry(purge).await.map(drop)
    });
    claimed.value
}

#[async_trait]
impl Queue for NatsQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    /// A call's own key needs no record: the item's key is fresh per call and written
    /// only where absent, so a repeat of the call finds its own item. A caller's key
    /// gets a record, written in the batch that appends the item.
    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        let AppendKey::Caller(key) = key else {
            self.append(item, priority, None).await?;
            return Ok(Enqueued::New);
        };
        let record = format!("{}.k.{}", self.root, keys::escape(key.as_str()));
        let store = &self.shared.store;
        let budget = RetryPolicy::within(store.request_timeout);
        let last = budget
            .one_shot(
                "reading an idempotency key",
                Idempotence::Idempotent,
                Failure::of,
                || store.last(&record),
            )
            .await?;
        let expected = match last {
            Some(entry) if entry.live() => return Ok(Enqueued::Duplicate),
            Some(entry) => entry.seq,
            None => 0,
        };
        let new = self
            .append(item, priority, Some((&record, expected)))
            .await?;
        Ok(if new {
            Enqueued::New
        } else {
            Enqueued::Duplicate
        })
    }

    async fn dequeue(&self) -> Result<Bytes> {
        let call = Call::new(&self.shared);
        let claimed = RetryPolicy::default()
            .wait_until("an item", None, || async {
                Ok(match self.claim(&call).await? {
                    Ok(claimed) => Ready(claimed),
                    Err(last) => NotYet(async move {
                        tokio::select! {
                            changed = self.changed_after(last, None) => changed,
                            () = self.kept.added.notified() => Ok(()),
                        }
                    }),
                })
            })
            .await?;
        Ok(hand_over(&self.shared, claimed))
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        let call = Call::new(&self.shared);
        let claimed = self.claim(&call).await?.ok();
        Ok(claimed.map(|claimed| hand_over(&self.shared, claimed)))
    }

    async fn receive(&self, session: &Session) -> Result<Delivery> {
        let lease = lease_of(session, &self.shared)?;
        let lost = lease.lost_token().cloned();
        RetryPolicy::default()
            .wait_until("an item", lost.as_ref(), || async {
                Ok(match self.hold_first(session, lease, false).await? {
                    Ok(delivery) => Ready(delivery),
                    Err(last) => NotYet(self.changed_after(last, lost.as_ref())),
                })
            })
            .await
    }

    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        let lease = lease_of(session, &self.shared)?;
        Ok(self.hold_first(session, lease, true).await?.ok())
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.waiting().await?.items.len())
    }

    /// The waiting items' earliest enqueue time against the server's clock, read after
    /// them (see the module docs, "Ages").
    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let head = self.waiting().await?;
        let Some(oldest) = head.items.iter().filter_map(|item| item.enqueued_us).min() else {
            return Ok(None);
        };
        let (now, _) = crate::clock::now_with(&self.shared.store, &[]).await?;
        Ok(Some(Duration::from_micros(now.saturating_sub(oldest))))
    }
}

/// The settlement of a received item: its hold key (held through the session) and
/// the item's key and sequence as the receive rewrote it.
struct NatsSettle {
    lease: Arc<LeaseInner>,
    hold: String,
    item: String,
    /// The item's delivery record and the sequence the receive wrote it at.
    record: String,
    record_seq: u64,
    /// The hold's sequence as the session renewed it, once the first attempt of the
    /// ack took it out of the renewals (`None`: the session had let go of it).
    forgotten: tokio::sync::OnceCell<Option<u64>>,
}

impl NatsSettle {
    /// Whether the delivery record's tombstone says this hold acknowledged the item.
    async fn acked_by_us(&self) -> Result<bool> {
        let entry = self.lease.shared.store.last(&self.record).await?;
        Ok(entry.is_some_and(|entry| {
            !entry.live() && entry.header(HOLDER_HEADER) == Some(self.hold.as_str())
        }))
    }
}

#[async_trait]
impl Settle for NatsSettle {
    async fn ack_step(&self) -> Result<bool> {
        // The hold leaves the session's renewals first: a renewal of a key this ack
        // purged would take the whole session for lost.
        let forgotten = self
            .forgotten
            .get_or_init(|| self.lease.forget(&self.hold))
            .await;
        let Some(hold_seq) = *forgotten else {
            return self.acked_by_us().await;
        };
        // The record's tombstone is the evidence of the ack (for a lost reply, and for
        // a repeated enqueue); the item's goes soon, so that reads of the head do not
        // walk it.
        let writes = vec![
            Write::purge(self.item.as_str()).ttl(TOMBSTONE_TTL),
            Write::purge(self.record.as_str())
                .header(HOLDER_HEADER, &self.hold)
                .if_at(self.record_seq)
                .ttl(CALL_KEY_WINDOW),
            tombstone(self.hold.as_str(), hold_seq),
        ];
        match self.lease.shared.store.batch(writes).await?.compared()? {
            Some(_) => Ok(true),
            // Refused: acknowledged by an earlier attempt whose reply was lost, or the
            // hold ended first.
            None => self.acked_by_us().await,
        }
    }

    async fn nack_step(&self) -> Result<()> {
        self.lease.release(&self.hold).await
    }

    /// When the session ended while the store was failing, the delivery record's
    /// tombstone tells whether an attempt whose reply was lost acknowledged the item.
    async fn ack_after_loss(&self) -> Result<()> {
        let acked = self.acked_by_us().await?;
        acked.then_some(()).ok_or(Error::SessionLost)
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    fn lost(&self) -> Option<&CancellationToken> {
        self.lease.lost_token()
    }
}

impl Make<Arc<Shared>, Name> for NatsQueue {
    fn make(context: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self::new(context, name, context.config.stale_claim()))
    }
}

#[cfg(test)]
mod tests {
    //! A put-back (or an abandoned hold) whose tombstone the stream's leader refuses
    //! while the write it races is still in flight, on the three-server cluster of
    //! `scripts/servers.sh`: both followers are killed (SIGKILL, their stores kept),
    //! so the leader takes the claim in but cannot commit it, refuses every compare on
    //! its key with code 10164 (no sequence), and answers reads from its store, which
    //! has not applied it. That is the window in which a follower behind the claim
    //! answers on a running cluster, held open for as long as the test needs it.
    //! Killed, not paused: a paused server keeps its interest in the direct gets,
    //! which any replica answers, so reads would go unanswered rather than read the
    //! leader's store.

    use super::*;
    use distsync_conformance::faults::cluster::servers_script;
    use distsync_conformance::faults::NATS_CLUSTER_VAR;
    use distsync_core::queue::STALE_CLAIM;

    /// The tests of this module kill members of the cluster: one at a time under
    /// `cargo test` (nextest runs each alone, `.config/nextest.toml`).
    static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// How long the followers stay down once the cleanup started, in which it must
    /// not end: the write it races cannot land. With the request timeout the claim
    /// waits first, well below the ten seconds after which a stream leader without a
    /// quorum steps down.
    const PAUSED: Duration = Duration::from_secs(3);

    /// How long the cleanup may take once the followers are back.
    const AFTER_RESUME: Duration = Duration::from_secs(30);

    /// The followers of a stream, killed, started again when dropped (also on a
    /// panic, so that a failed test leaves the cluster running).
    struct StoppedFollowers(Vec<usize>);

    impl StoppedFollowers {
        fn kill(followers: Vec<usize>) -> Self {
            let mut stopped = Self(Vec::new());
            for member in followers {
                let outcome = servers("nats-kill-member", member);
                assert!(outcome.is_ok(), "{outcome:?}");
                stopped.0.push(member);
            }
            stopped
        }
    }

    impl Drop for StoppedFollowers {
        fn drop(&mut self) {
            // No panic here: this also runs while a failed assertion unwinds.
            for member in std::mem::take(&mut self.0) {
                if let Err(error) = servers("nats-start-member", member) {
                    eprintln!("{error}");
                }
            }
        }
    }

    /// Runs `scripts/servers.sh <command> <member>`; why it failed, if it did.
    fn servers(command: &str, member: usize) -> std::result::Result<(), String> {
        let status = std::process::Command::new("bash")
            .arg(servers_script())
            .arg(command)
            .arg(member.to_string())
            .status()
            .map_err(|error| format!("servers.sh {command} {member}: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("servers.sh {command} {member}: {status}"))
        }
    }

    /// How long a cluster started just before the tests may take to elect its
    /// JetStream leader and make a replicated bucket.
    const READY_WITHIN: Duration = Duration::from_secs(60);

    /// A backend of `config` once the cluster answers: these tests run first, and CI
    /// starts the cluster just before them, so a connection that times out is made
    /// again until [`READY_WITHIN`]; any other error, or one past it, fails the test.
    async fn when_ready(config: crate::NatsConfig) -> crate::NatsBackend {
        let connect = || crate::backend_with_config(&config);
        once_answered("connecting to the cluster", READY_WITHIN, connect).await
    }

    /// A backend on the bucket `bucket` of the cluster at `url`, connected to its
    /// stream's leader alone (the others are killed), and the members
    /// (numbered in URL order, as `servers.sh` names them `nats-N`) that follow it.
    async fn on_the_leader(url: &str, bucket: &str) -> (crate::NatsBackend, Vec<usize>) {
        let config: crate::NatsConfig = url.parse().expect("the cluster's URL");
        let config = config.with_bucket(bucket).expect("a bucket name");
        let servers = config.servers().to_vec();
        let any = when_ready(config).await;
        let store = &any.shared.store;
        let info = store.stream_info().await.expect("the stream's info");
        let leader = (info.cluster.as_ref())
            .and_then(|cluster| cluster.leader.as_deref())
            .and_then(|name| name.strip_prefix("nats-"))
            .and_then(|member| member.parse::<usize>().ok())
            .filter(|member| (1..=servers.len()).contains(member))
            .expect("the stream's leader is a member of the URL");
        drop(any);
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let login = hosts.rsplit_once('@').map(|(login, _)| format!("{login}@"));
        let alone = format!(
            "{scheme}://{}{}?{query}",
            login.unwrap_or_default(),
            servers[leader - 1]
        );
        let config: crate::NatsConfig = alone.parse().expect("the leader's URL");
        let config = config
            .with_bucket(bucket)
            .expect("a bucket name")
            .with_request_timeout(Duration::from_secs(1));
        let backend = crate::backend_with_config(&config).await.expect("connect");
        let followers = (1..=servers.len()).filter(|m| *m != leader).collect();
        (backend, followers)
    }

    /// The answer of `call` once the cluster serves it, asked again on a transient
    /// error until `within` has passed; any other error, or one past it, fails the
    /// test. A cluster just started, or whose killed followers just started again,
    /// elects a stream leader first (JetStream answers "temporarily unavailable", or
    /// not at all, meanwhile).
    async fn once_answered<T, F, Fut>(what: &str, within: Duration, mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match call().await {
                Ok(answer) => return answer,
                Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("{what}: {error:?}"),
            }
        }
    }

    /// Checks that the compare of a tombstone on `key` is refused without a sequence
    /// and that a read shows no message there: the write in flight is neither
    /// readable nor named by the refusal.
    async fn in_flight_unreadable(store: &Store, key: &str) {
        let refused = store
            .publish(Write::purge(key).if_at(0))
            .await
            .expect("the leader answers");
        let Published::Refused { code, description } = refused else {
            panic!("the tombstone on {key} was not refused: {refused:?}")
        };
        assert_eq!(code, 10164, "{description}");
        let read = store.last(key).await.expect("the leader answers a read");
        assert!(read.is_none(), "the write in flight is readable: {read:?}");
    }

    /// A clean-up retried for as long as its background run is.
    fn retried() -> CleanUp {
        CleanUp::new("a test's clean-up", "the test fails").within(CLEANUP_BUDGET)
    }

    /// Runs `cleanup` while the write to `key` is in flight: it must not end while
    /// the followers are down (a refusal with no sequence and an empty read tell it
    /// nothing), and it ends once they are back.
    async fn cleanup_waits_for_the_write(
        stopped: StoppedFollowers,
        store: &Store,
        key: &str,
        cleanup: tokio::task::JoinHandle<Result<()>>,
    ) {
        in_flight_unreadable(store, key).await;
        let mut cleanup = cleanup;
        let early = tokio::time::timeout(PAUSED, &mut cleanup).await;
        assert!(
            early.is_err(),
            "the cleanup of {key} ended while the write it races was still in flight: {early:?}"
        );
        drop(stopped);
        tokio::time::timeout(AFTER_RESUME, cleanup)
            .await
            .expect("the cleanup ends once the write landed")
            .expect("the cleanup's task")
            .expect("the cleanup");
    }

    /// A dequeue's claim whose answer was lost (its batch in flight past the request
    /// timeout) is put back at the call's end: its item is neither lost nor left in
    /// the in-flight record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_back_refused_while_its_claim_is_in_flight_puts_the_item_back() {
        let Some(url) = distsync_conformance::server_url(NATS_CLUSTER_VAR) else {
            return;
        };
        let _one_at_a_time = CLUSTER.lock().await;
        let (backend, followers) = on_the_leader(&url, "put_back_in_flight").await;
        let shared = &backend.shared;
        let name = Name::new(format!("put_back_{}", call_id())).expect("a name");
        let queue = NatsQueue::new(shared, name, STALE_CLAIM);
        queue
            .append_bytes(&AppendKey::call(), Bytes::from_static(b"item"), 0)
            .await
            .expect("enqueue");
        let head = queue.queued(Records::Read).await.expect("the head");
        let item = head.untried().next().expect("the item just enqueued");

        let stopped = StoppedFollowers::kill(followers);
        let call = Call::new(shared);
        let claimed = queue.claim_item(&call, item).await;
        assert!(
            claimed.as_ref().is_err_and(Error::is_transient),
            "a claim the leader cannot commit is answered: {:?}",
            claimed.map(|claimed| claimed.map(|claimed| claimed.record))
        );
        // Taken from the call, so that its end puts nothing back: the test does.
        let records = std::mem::take(&mut *call.records());
        let [record] = records.as_slice() else {
            panic!("the call knows {records:?}, not its one claim");
        };
        let cleanup = tokio::spawn({
            let (shared, record) = (Arc::clone(shared), record.clone());
            async move { retried().retry(|| put_back(&shared, &record)).await }
        });
        cleanup_waits_for_the_write(stopped, &shared.store, record, cleanup).await;

        let left = once_answered("a read", AFTER_RESUME, || shared.store.last(record)).await;
        assert!(
            !left.as_ref().is_some_and(Entry::live),
            "the item stays in its in-flight record {record}"
        );
        let dequeued = once_answered("try_dequeue", AFTER_RESUME, || queue.try_dequeue()).await;
        assert_eq!(dequeued.as_deref(), Some(&b"item"[..]), "the item is lost");
        let after = once_answered("try_dequeue", AFTER_RESUME, || queue.try_dequeue()).await;
        assert_eq!(after, None);
    }

    /// A receive's hold whose batch is in flight when the receive ends is purged: the
    /// item is not held until the session ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_hold_refused_while_its_batch_is_in_flight_is_purged() {
        let Some(url) = distsync_conformance::server_url(NATS_CLUSTER_VAR) else {
            return;
        };
        let _one_at_a_time = CLUSTER.lock().await;
        let (backend, followers) = on_the_leader(&url, "hold_in_flight").await;
        let shared = &backend.shared;
        let hold = format!("hold_in_flight.{}", call_id());

        let stopped = StoppedFollowers::kill(followers);
        // The receive's batch, as far as the hold is concerned: the hold's creation,
        // compared with no message, on a session's TTL.
        let receive = tokio::spawn({
            let (shared, hold) = (Arc::clone(shared), hold.clone());
            async move {
                let write = Write::put(hold.as_str(), Bytes::from_static(b"item"))
                    .if_at(0)
                    .ttl(Duration::from_secs(60));
                shared.store.publish(write).await
            }
        });
        // The receive's answer is lost: the leader cannot commit its batch.
        let answer = receive.await.expect("the receive's task");
        assert!(
            answer.as_ref().is_err_and(Error::is_transient),
            "a write the leader cannot commit is answered: {answer:?}"
        );
        let cleanup = tokio::spawn({
            let (shared, hold) = (Arc::clone(shared), hold.clone());
            async move { retried().retry(|| abandon_hold(&shared, &hold)).await }
        });
        cleanup_waits_for_the_write(stopped, &shared.store, &hold, cleanup).await;

        let left = once_answered("a read", AFTER_RESUME, || shared.store.last(&hold)).await;
        assert!(
            left.as_ref()
                .is_some_and(|entry| entry.seq > 0 && !entry.live()),
            "the hold {hold} is not purged: {left:?}"
        );
    }

    /// How long an in-flight record lives before the stale-record tests' queues put
    /// it back.
    const STALE_AFTER: Duration = Duration::from_secs(2);

    /// A fresh queue on the single server whose records are stale after
    /// [`STALE_AFTER`], holding `items` in order, and the first item claimed by a
    /// dequeue whose process died before it purged its in-flight record. `None`
    /// when there is no test server.
    async fn queue_after_an_unfinished_dequeue(items: &[&'static str]) -> Option<NatsQueue> {
        let url = distsync_conformance::server_url("DISTSYNC_NATS_URL")?;
        let config: crate::NatsConfig = url.parse().expect("the server's URL");
        let backend = crate::backend_with_config(&config).await.expect("connect");
        let shared = &backend.shared;
        let name = Name::new(format!("unfinished_{}", call_id())).expect("a name");
        let queue = NatsQueue::new(shared, name.clone(), STALE_AFTER);
        for item in items {
            let item = Bytes::from_static(item.as_bytes());
            queue
                .append_bytes(&AppendKey::call(), item, 0)
                .await
                .expect("enqueue");
        }
        // The dequeue's process: its claim lands, and nothing of it runs after.
        let dying = NatsQueue::new(shared, name, STALE_CLAIM);
        let claimed = dying.claim(&Call::new(shared)).await.expect("a claim");
        let claimed = claimed.unwrap_or_else(|_| panic!("nothing to claim"));
        assert_eq!(claimed.value, items[0].as_bytes());
        assert_eq!(
            queue.len().await.expect("len"),
            items.len() - 1,
            "the item is taken"
        );
        Some(queue)
    }

    #[tokio::test]
    async fn the_record_of_a_dequeue_that_never_finished_is_put_back_once_stale() {
        let Some(queue) = queue_after_an_unfinished_dequeue(&["first", "second"]).await else {
            return;
        };
        // A sweep before the record is stale leaves it, and says when it is due.
        let due = queue
            .sweep()
            .await
            .expect("a sweep")
            .expect("a record is left");
        assert!(due <= STALE_AFTER, "due in {due:?}");
        assert_eq!(queue.len().await.expect("len"), 1, "a fresh record stays");
        tokio::time::sleep(due).await;
        sweep_until_no_record_is_left(&queue).await;
        assert_eq!(queue.len().await.expect("len"), 2, "the item is back");
        let records = [format!("{}.c.*", queue.root)];
        let (left, _) = queue.shared.store.list(&records).await.expect("a read");
        assert!(!left.iter().any(Entry::live), "a record is left: {left:?}");
        // Written anew, the item put back waits behind the others of its priority.
        let mut dequeued = Vec::new();
        while let Some(item) = queue.try_dequeue().await.expect("try_dequeue") {
            dequeued.push(item);
        }
        assert_eq!(dequeued, ["second", "first"], "each item once");
    }

    /// Sweeps `queue` until its sweep leaves no in-flight record, within 10 s: the
    /// records were due, or come due within that time.
    async fn sweep_until_no_record_is_left(queue: &NatsQueue) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queue.sweep().await.expect("a sweep").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the record never came due"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A migration runs on a quiesced source, where a claim left in flight is a dead
    /// dequeuer's: the export lists its item once, where the put-back puts it.
    #[tokio::test]
    async fn export_lists_the_item_of_a_dequeue_that_never_finished_where_a_put_back_puts_it() {
        let Some(queue) = queue_after_an_unfinished_dequeue(&["first", "second"]).await else {
            return;
        };
        let later = Bytes::from_static(b"later");
        queue
            .append_bytes(&AppendKey::call(), later, 1)
            .await
            .expect("enqueue");
        let expected = [(0, "second"), (0, "first"), (1, "later")]
            .map(|(priority, item)| (priority, Bytes::from_static(item.as_bytes())));
        assert_eq!(
            exported(&queue).await,
            expected,
            "each item once, at its place"
        );
        // The put-back once the record is stale gives the same queue.
        tokio::time::sleep(STALE_AFTER).await;
        sweep_until_no_record_is_left(&queue).await;
        assert_eq!(exported(&queue).await, expected, "the put-back's place");
    }

    /// The items the export lists for `queue`, each with its priority, in its order.
    async fn exported(queue: &NatsQueue) -> Vec<(u16, Bytes)> {
        let snapshot = crate::export::export(&queue.shared).await.expect("export");
        snapshot
            .queues
            .get(&queue.name)
            .map(|items| {
                items
                    .iter()
                    .map(|item| (item.priority, item.item.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Three dequeues of one priority whose processes died after their claims landed,
    /// on the server of the URL in `url_var`: the export lists their items in the order
    /// a sweep puts them back and the queue then delivers them, the order of the claims.
    /// The items are claimed out of the queue's order (third, first, second), so that an
    /// export by the items' enqueue times or former places would differ.
    async fn exports_unfinished_dequeues_in_the_order_a_sweep_delivers_them(url_var: &str) {
        let Some(url) = distsync_conformance::server_url(url_var) else {
            return;
        };
        let backend = when_ready(url.parse().expect("the server's URL")).await;
        let shared = &backend.shared;
        let name = Name::new(format!("unfinished_order_{}", call_id())).expect("a name");
        let queue = NatsQueue::new(shared, name.clone(), STALE_AFTER);
        let enqueue = |item: &'static str, priority: u16| {
            let item = Bytes::from_static(item.as_bytes());
            let queue = &queue;
            async move {
                queue
                    .append_bytes(&AppendKey::call(), item, priority)
                    .await
                    .expect("enqueue");
            }
        };
        for item in ["first", "second", "third", "waiting"] {
            enqueue(item, 0).await;
        }
        enqueue("other", 1).await;
        // The dequeues' process: their claims land, and nothing of them runs after.
        let dying = NatsQueue::new(shared, name, STALE_CLAIM);
        let head = dying.waiting().await.expect("a read of the queue");
        for (at, item) in [(2, "third"), (0, "first"), (1, "second")] {
            assert_eq!(head.items[at].value, item, "the queue's order");
            let claimed = dying
                .claim_item(&Call::new(shared), &head.items[at])
                .await
                .expect("a claim")
                .expect("a free item");
            assert_eq!(claimed.value, item);
        }
        // Enqueued after the claims, yet ahead of their items: a put-back writes anew.
        enqueue("later", 0).await;
        let exported = exported(&queue).await;
        let expected = [
            (0, "waiting"),
            (0, "later"),
            (0, "third"),
            (0, "first"),
            (0, "second"),
            (1, "other"),
        ]
        .map(|(priority, item)| (priority, Bytes::from_static(item.as_bytes())));
        assert_eq!(exported, expected, "each item once, claimed ones by claim");
        tokio::time::sleep(STALE_AFTER).await;
        sweep_until_no_record_is_left(&queue).await;
        let mut delivered = Vec::new();
        while let Some(item) = queue.try_dequeue().await.expect("try_dequeue") {
            delivered.push(item);
        }
        let exported: Vec<Bytes> = exported.into_iter().map(|(_, item)| item).collect();
        assert_eq!(delivered, exported, "the export's order is the delivery's");
    }

    #[tokio::test]
    async fn unfinished_dequeues_are_exported_in_their_delivery_order() {
        exports_unfinished_dequeues_in_the_order_a_sweep_delivers_them("DISTSYNC_NATS_URL").await;
    }

    #[tokio::test]
    async fn unfinished_dequeues_are_exported_in_their_delivery_order_on_the_cluster() {
        exports_unfinished_dequeues_in_the_order_a_sweep_delivers_them(NATS_CLUSTER_VAR).await;
    }

    #[tokio::test]
    async fn a_waiting_dequeue_takes_the_item_of_a_record_that_comes_due() {
        let Some(queue) = queue_after_an_unfinished_dequeue(&["only"]).await else {
            return;
        };
        // The waiter looks again when the record comes due (after STALE_AFTER): waiting
        // for the safety net alone, its second look would come only after SAFETY_NET.
        // The bound sits just below that, leaving a loaded machine the rest as slack.
        let bound = SAFETY_NET - Duration::from_millis(500);
        let item = tokio::time::timeout(bound, queue.dequeue())
            .await
            .expect("the waiting dequeue did not take the item back when its record came due")
            .expect("dequeue");
        assert_eq!(item, "only");
        assert_eq!(
            queue.try_dequeue().await.expect("try_dequeue"),
            None,
            "delivered once"
        );
    }
}
