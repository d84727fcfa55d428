//! Queue cases: FIFO, priority order, no loss and no duplicate under cancelled
//! consumers, and the empty queue.

mod ack_reply;
mod consumer;
mod idempotent;
mod lost_claim_migrates;
mod lost_dequeuer;
mod lost_mid_claim;
mod metrics;
mod outage;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Bytes, Delivery, Error, Name, Queue, Session};
use tokio::time::Instant;

use super::boxed;
use super::scenario::go_interop;
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, eventually, join_all, lock_vec, ms, per_second, proxied_client, violated, within,
    Bounded, Check, Context, Fail, Holds, Task, LONG, PROMPT,
};
use crate::cpu_pressure::{starved_past_cap, timeout_live, unfinished};
use crate::faults::{HoldKind, Hook, PartitionMode};
use crate::harness::Harness;
use crate::rng::Rng;

/// The queue cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "queue_fifo",
        group: Group::Queue,
        guarantee: "FIFO order",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(fifo(h)),
    },
    Case {
        id: "queue_binary_items",
        group: Group::Queue,
        guarantee: "items are bytes: not UTF-8, NUL, newlines and the empty item round-trip \
                    through dequeue, receive and nack",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(binary_items(h)),
    },
    Case {
        id: "queue_priority",
        group: Group::Queue,
        guarantee: "priority order (lower first, FIFO within)",
        needs: &[Need::Queue, Need::PriorityQueue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(priority(h)),
    },
    Case {
        id: "queue_no_loss_no_duplicate",
        group: Group::Queue,
        guarantee: "no loss, no duplicate with cancelled consumers",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(no_loss_no_duplicate(h)),
    },
    Case {
        id: "queue_lost_replies",
        group: Group::Queue,
        guarantee: "lost replies to claims (connections reset mid-dequeue): every item once",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(lost_replies(h)),
    },
    Case {
        id: "queue_enqueue_lost_replies",
        group: Group::Queue,
        guarantee: "lost replies to enqueues (a request forwarded, its answer cut): retried \
                    under one idempotency key (the caller's, or the call's own), every item once",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(idempotent::lost_replies_to_enqueues(h)),
    },
    Case {
        id: "queue_enqueue_once_shared_key",
        group: Group::Queue,
        guarantee: "enqueue_once: one key from several producers at once appends one item, \
                    one producer told New; a consumed key is still a duplicate within the window",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(idempotent::one_key_from_many_producers(h)),
    },
    Case {
        id: "queue_dequeue_waits_through_outage",
        group: Group::Queue,
        guarantee: "a dequeue waits through a store outage longer than the one-shot budget \
                    and gets the item enqueued after it; try_dequeue fails within the budget",
        needs: &[Need::Queue],
        claim: Claim::Contract,
        hooks: &[Hook::Partition],
        run: |h| boxed(outage::dequeue_waits_through_an_outage(h)),
    },
    Case {
        id: "queue_dequeuer_lost_mid_claim",
        group: Group::Queue,
        guarantee: "at-most-once dequeue: a dequeuer lost between its claim and the hand-over \
                    (reply dropped, then gone for good) loses nothing: another consumer gets \
                    the item once the claim is older than stale_claim, once",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(lost_mid_claim::dequeuer_lost_mid_claim(h)),
    },
    Case {
        id: "queue_lost_claim_migrates",
        group: Group::Queue,
        guarantee: "at-most-once dequeue: the claim of a dequeuer lost between its claim and \
                    the hand-over, migrated before it is stale, arrives as its item, once, where \
                    the store's put-back puts it; the other items once each, in order",
        needs: &[Need::Queue, Need::Export],
        claim: Claim::Offered,
        hooks: &[Hook::FreshStore, Hook::Partition],
        run: |h| boxed(lost_claim_migrates::lost_claim_migrates(h)),
    },
    Case {
        id: "queue_empty",
        group: Group::Queue,
        guarantee: "try_dequeue on empty is None; dequeue wakes",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(empty_queue(h)),
    },
    Case {
        id: "queue_reliable_session_end",
        group: Group::Queue,
        guarantee: "reliable delivery: a receiver's session ended by the store returns its item \
                    first, redelivery count 1",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(reliable_session_end(h)),
    },
    Case {
        id: "queue_ack_reply_lost_session_end",
        group: Group::Queue,
        guarantee: "reliable delivery: an ack whose reply is lost and whose session then ends \
                    answers truthfully (Ok: the item is gone; SessionLost: it comes back)",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(ack_reply::ack_reply_lost_then_session_end(h)),
    },
    Case {
        id: "queue_reliable_nack_keeps_place",
        group: Group::Queue,
        guarantee: "reliable delivery: nack (or a dropped delivery) returns the item at its \
                    place; dequeue skips held items",
        needs: &[Need::Queue, Need::PriorityQueue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(reliable_nack_keeps_place(h)),
    },
    Case {
        id: "queue_reliable_concurrent",
        group: Group::Queue,
        guarantee: "reliable delivery: concurrent consumers never hold one item at once; each acked once, in order",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(reliable_concurrent(h)),
    },
    Case {
        id: "queue_reliable_consumer_crash",
        group: Group::Queue,
        guarantee: "reliable delivery: a consumer killed (SIGKILL, child process) after \
                    receiving loses nothing: redelivered with count 1 after its session's TTL",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        // Kills a child-process consumer (Hook::ChildHolder) where there is one, and
        // freezes the consumer's lease on the memory store (Hook::PausedHolder): the
        // body picks whichever the store's hooks offer.
        hooks: &[Hook::AnyExternalHolder],
        run: |h| boxed(reliable_consumer_crash(h)),
    },
    Case {
        id: "queue_consumer_poison_and_deadline",
        group: Group::Queue,
        guarantee: "consumer: a poison item is dead-lettered after max_deliveries and the \
                    items behind it are processed; a hung handler's item is redelivered after \
                    the processing deadline",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(consumer::poison_and_hung_handlers(h)),
    },
    Case {
        id: "queue_metrics_depth",
        group: Group::Queue,
        guarantee: "metrics: the queue depth (len) counts enqueued items, not received ones",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(metrics::depth(h)),
    },
    Case {
        id: "queue_metrics_redeliveries",
        group: Group::Queue,
        guarantee: "metrics: a delivery counts its redeliveries after a nack and after a \
                    processing deadline",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(metrics::redeliveries(h)),
    },
    Case {
        id: "queue_metrics_dead_lettered",
        group: Group::Queue,
        guarantee: "metrics: an item past max_deliveries is counted in the dead-letter queue, \
                    after exactly max_deliveries handler calls",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(metrics::dead_lettered(h)),
    },
    Case {
        id: "queue_metrics_oldest_age",
        group: Group::Queue,
        guarantee: "metrics: the oldest item's age grows on the store's clock, leaves out held \
                    items and resets after the ack",
        needs: &[Need::Queue, Need::ReliableDelivery, Need::QueueAge],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(metrics::oldest_age(h)),
    },
    Case {
        id: "queue_interop_go",
        group: Group::Queue,
        guarantee: "interoperates with etcd's Go recipe.Queue and PriorityQueue (layout=go): items in order both ways",
        needs: &[Need::Queue, Need::PriorityQueue],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::queue(h)),
    },
];

/// FIFO: 20 items enqueued in order come out of `dequeue()` in that order.
async fn fifo(h: Harness) -> Check {
    const ITEMS: usize = 20;
    let (_, queue) = new_queue(&h)?;
    enqueue_all(&*queue, (0..ITEMS).map(|i| (format!("item-{i:02}"), None))).await?;
    let len = within(PROMPT, "len()", queue.len()).await?;
    ensure!(len == ITEMS, "len() is {len} after {ITEMS} enqueues");
    let mut got = Vec::new();
    for _ in 0..ITEMS {
        let item = within(PROMPT, "dequeueing", queue.dequeue()).await?;
        got.push(String::from_utf8_lossy(&item).into_owned());
    }
    let expected: Vec<String> = (0..ITEMS).map(|i| format!("item-{i:02}")).collect();
    ensure!(got == expected, "dequeued {got:?}, enqueued {expected:?}");
    let rest = within(
        PROMPT,
        "try_dequeue on the drained queue",
        queue.try_dequeue(),
    )
    .await?;
    ensure!(rest.is_none(), "a drained queue still gave {rest:?}");
    Ok(Holds::new(format!(
        "{ITEMS} items dequeued in enqueue order"
    )))
}

/// Priority order: lower numbers first, FIFO within a priority, `enqueue` at the
/// default (highest) priority.
async fn priority(h: Harness) -> Check {
    let (_, queue) = new_queue(&h)?;
    let items: [(&str, Option<u16>); 8] = [
        ("p5-a", Some(5)),
        ("p1-a", Some(1)),
        ("p5-b", Some(5)),
        ("p0-a", Some(0)),
        ("max", Some(u16::MAX)),
        ("p1-b", Some(1)),
        ("default", None),
        ("p0-b", Some(0)),
    ];
    enqueue_all(&*queue, items).await?;
    let mut got = Vec::new();
    while let Some(item) = within(PROMPT, "try_dequeue", queue.try_dequeue()).await? {
        got.push(String::from_utf8_lossy(&item).into_owned());
        ensure!(
            got.len() <= items.len(),
            "more items came out than went in: {got:?}"
        );
    }
    let expected = [
        "p0-a", "default", "p0-b", "p1-a", "p1-b", "p5-a", "p5-b", "max",
    ];
    ensure!(got == expected, "dequeued {got:?}, expected {expected:?}");
    Ok(Holds::new(
        "lower number first, FIFO within a priority; enqueue() is priority 0",
    ))
}

/// No item lost or delivered twice: 4 producers enqueue 100 items each while 4
/// consumers dequeue; consumers bound each `dequeue()` with a timeout picked at random
/// from 0 to 200 ms, so many dequeues are cancelled mid-flight. Every produced item
/// must be delivered exactly once, and `len()` is 0 at the end.
async fn no_loss_no_duplicate(h: Harness) -> Check {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 100;
    const CONSUMERS: usize = 4;
    const TOTAL: usize = PRODUCERS * PER_PRODUCER;
    const TIMEOUTS_MS: [u64; 6] = [0, 1, 2, 5, 20, 200];
    let name = h.name("queue").ctx("naming the queue")?;
    let delivered = Arc::new(Mutex::new(Vec::<Bytes>::with_capacity(TOTAL)));
    let count = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut consumers = Vec::new();
    for c in 0..CONSUMERS {
        let queue = h
            .backend()
            .queue(name.clone())
            .ctx("making a consumer's queue")?;
        let (delivered, count, cancelled) = (delivered.clone(), count.clone(), cancelled.clone());
        consumers.push(Task::spawn(format!("consumer {c}"), async move {
            let mut rng = Rng::new(c as u64 + 1);
            let deadline = Instant::now() + LONG;
            while count.load(Ordering::SeqCst) < TOTAL {
                if Instant::now() > deadline {
                    // Late, not lost: what is left is drained after the consumers stop.
                    return Ok(());
                }
                let limit = Duration::from_millis(TIMEOUTS_MS[rng.below(TIMEOUTS_MS.len())]);
                match tokio::time::timeout(limit, queue.dequeue()).await {
                    Ok(item) => {
                        let item = item.ctx(format!("consumer {c} dequeueing"))?;
                        lock_vec(&delivered).push(item);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Ok(())
        }));
    }
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let queue = h
            .backend()
            .queue(name.clone())
            .ctx("making a producer's queue")?;
        producers.push(Task::spawn(format!("producer {p}"), async move {
            for i in 0..PER_PRODUCER {
                queue
                    .enqueue(format!("p{p}-{i:03}"))
                    .bounded(format!("producer {p} enqueueing"))
                    .await?;
            }
            Ok(())
        }));
    }
    join_all(&mut producers, LONG).await?;
    let consumed = join_all(&mut consumers, LONG + PROMPT).await;
    // What the consumers left at their deadline (a loaded machine slows a store's
    // dequeues, and the short timeouts then cancel most of them) is late, not lost:
    // drained here without cancellations, each dequeue within PROMPT. An item that
    // does not come then is missing below.
    let queue = h.backend().queue(name).ctx("making a queue")?;
    let late = drain(&*queue, &delivered, &count, TOTAL).await;
    let delivered = std::mem::take(&mut *lock_vec(&delivered));
    let (counts, duplicates) = tally(&delivered);
    ensure!(
        duplicates.is_empty(),
        "{} item(s) delivered twice: {}",
        duplicates.len(),
        summary(&duplicates)
    );
    consumed?;
    let late = late?;
    let left = within(PROMPT, "len() at the end", queue.len()).await?;
    let missing: Vec<String> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |i| format!("p{p}-{i:03}")))
        .filter(|item| !counts.contains_key(item.as_bytes()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {TOTAL} items never delivered ({} still queued): {}",
        missing.len(),
        left,
        summary(&missing)
    );
    ensure!(
        delivered.len() == TOTAL,
        "{} deliveries for {TOTAL} items",
        delivered.len()
    );
    ensure!(left == 0, "len() is {left} after every item was delivered");
    let empty = within(PROMPT, "try_dequeue at the end", queue.try_dequeue()).await?;
    ensure!(
        empty.is_none(),
        "try_dequeue gave {empty:?} after every item was delivered"
    );
    let cancelled = cancelled.load(Ordering::SeqCst);
    Ok(Holds::figure(
        format!(
            "{TOTAL} items, {cancelled} cancelled dequeues, {late} drained after the consumers' \
             deadline, {}",
            per_second(TOTAL, started.elapsed())
        ),
        format!("{PRODUCERS} producers, {CONSUMERS} consumers with random 0-200 ms timeouts: each item exactly once"),
    ))
}

/// Dequeues into `delivered` until `count` reaches `total`, each dequeue within
/// [`PROMPT`] and the whole within [`LONG`]: stops at the first that does not come.
/// Returns how many it dequeued.
async fn drain(
    queue: &dyn Queue,
    delivered: &Mutex<Vec<Bytes>>,
    count: &AtomicUsize,
    total: usize,
) -> Check<usize> {
    let deadline = Instant::now() + LONG;
    let mut drained = 0;
    while count.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        // Each dequeue has PROMPT of a machine with a CPU free ([`timeout_live`]): one
        // that the starved machine did not give even that measured nothing, and the
        // items it left are not "never delivered".
        let item = match timeout_live(PROMPT, queue.dequeue()).await {
            Ok(item) => item,
            Err(starved) if starved_past_cap(PROMPT, starved) => {
                return Err(Fail::Starved {
                    starved,
                    bound: PROMPT,
                    why: format!(
                        "draining the queue after {drained} items: a dequeue {}",
                        unfinished(PROMPT, starved)
                    ),
                });
            }
            Err(_) => break,
        };
        lock_vec(delivered).push(item.ctx("draining the queue")?);
        count.fetch_add(1, Ordering::SeqCst);
        drained += 1;
    }
    Ok(drained)
}

/// `try_dequeue` on an empty queue is `None` at once; a blocked `dequeue()` gets an
/// item enqueued later.
async fn empty_queue(h: Harness) -> Check {
    let (name, queue) = new_queue(&h)?;
    let started = Instant::now();
    let none = within(PROMPT, "try_dequeue on an empty queue", queue.try_dequeue()).await?;
    let refusal = started.elapsed();
    ensure!(none.is_none(), "try_dequeue on a fresh queue gave {none:?}");
    let len = within(PROMPT, "len() of an empty queue", queue.len()).await?;
    ensure!(len == 0, "len() of a fresh queue is {len}");
    ensure!(
        within(PROMPT, "is_empty()", queue.is_empty()).await?,
        "is_empty() of a fresh queue is false"
    );
    let consumer_queue: Arc<dyn Queue> =
        Arc::from(h.backend().queue(name).ctx("making a consumer's queue")?);
    let mut consumer = Task::spawn("consumer", async move {
        consumer_queue.dequeue().await.ctx("dequeueing")
    });
    consumer
        .ensure_blocked(h.settle(), "the queue is empty")
        .await?;
    within(
        PROMPT,
        "enqueueing",
        queue.enqueue(Bytes::from_static(b"late")),
    )
    .await?;
    let item = consumer.join(PROMPT).await?;
    ensure!(
        item.as_ref() == b"late",
        "the blocked dequeue() returned {item:?}"
    );
    let len = within(PROMPT, "len() after the dequeue", queue.len()).await?;
    ensure!(len == 0, "len() is {len} after the only item was dequeued");
    Ok(Holds::figure(
        format!("None in {}", ms(refusal)),
        "try_dequeue None and len 0 on an empty queue; a blocked dequeue() woke for a later item",
    ))
}

/// Items that are not text: every byte value, invalid UTF-8, NUL, a newline, the
/// empty item. Each must come back byte for byte from `dequeue`, and from `receive`
/// after a `nack` put it back.
async fn binary_items(h: Harness) -> Check {
    let (_, queue) = new_queue(&h)?;
    let every_byte: Vec<u8> = (0..=255).collect();
    let items: Vec<Bytes> = vec![
        Bytes::from(every_byte),
        Bytes::from_static(b"\xff\xfe not UTF-8 \xc3\x28"),
        Bytes::from_static(b"nul\0inside\nand a newline\r\n"),
        Bytes::new(),
    ];
    for item in &items {
        within(PROMPT, "enqueueing", queue.enqueue(item.clone())).await?;
    }
    let session = h.session().set_up("opening a session").await?;
    for expected in &items[..2] {
        let delivery = within(PROMPT, "receiving", queue.receive(&session)).await?;
        ensure!(
            delivery.item() == expected,
            "receive gave {:?} for {expected:?}",
            delivery.item()
        );
        delivery.nack().bounded("nacking").await?;
        let again = within(PROMPT, "receiving again", queue.receive(&session)).await?;
        ensure!(
            again.item() == expected,
            "after nack, receive gave {:?} for {expected:?}",
            again.item()
        );
        again.ack().bounded("acknowledging").await?;
    }
    for expected in &items[2..] {
        let item = within(PROMPT, "dequeuing", queue.dequeue()).await?;
        ensure!(item == expected, "dequeue gave {item:?} for {expected:?}");
    }
    let left = within(PROMPT, "len()", queue.len()).await?;
    ensure!(left == 0, "{left} items left after each was taken once");
    session.close().bounded("closing the session").await?;
    Ok(Holds::new(format!(
        "{} items of bytes came back exact, through dequeue and through receive after nack",
        items.len()
    )))
}

/// A queue of the case's own, and its name (for other clients' handles on it).
fn new_queue(h: &Harness) -> Check<(Name, Box<dyn Queue>)> {
    let name = h.name("queue").ctx("naming the queue")?;
    let queue = h.backend().queue(name.clone()).ctx("making a queue")?;
    Ok((name, queue))
}

/// Enqueues the items in order, each at its priority (`None`: `enqueue`, the default
/// priority).
async fn enqueue_all<B: Into<Bytes>>(
    queue: &dyn Queue,
    items: impl IntoIterator<Item = (B, Option<u16>)>,
) -> Check<()> {
    for (item, priority) in items {
        let item = item.into();
        match priority {
            Some(priority) => {
                within(
                    PROMPT,
                    "enqueueing with priority",
                    queue.enqueue_with_priority(item, priority),
                )
                .await?
            }
            None => within(PROMPT, "enqueueing", queue.enqueue(item)).await?,
        }
    }
    Ok(())
}

/// How many times each item came out, and the items that came out more than once
/// (`item xN`).
fn tally(items: &[Bytes]) -> (BTreeMap<Bytes, usize>, Vec<String>) {
    let mut counts = BTreeMap::<Bytes, usize>::new();
    for item in items {
        *counts.entry(item.clone()).or_default() += 1;
    }
    let repeated = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(item, n)| format!("{} x{n}", String::from_utf8_lossy(item)))
        .collect();
    (counts, repeated)
}

/// A consumer (`who`) receiving from the queue `name` through `session` in a task of
/// its own, checked to be blocked (`because`); the task returns the delivery and when
/// it came.
async fn waiting_receiver(
    h: &Harness,
    name: Name,
    session: &Session,
    who: &str,
    because: &str,
) -> Check<Task<(Delivery, Instant)>> {
    let queue: Arc<dyn Queue> = Arc::from(
        h.backend()
            .queue(name)
            .ctx(format!("making the queue of {who}"))?,
    );
    let session = session.clone();
    let doing = format!("{who} receiving");
    let waiter = Task::spawn(who.to_owned(), async move {
        let delivery = queue.receive(&session).await.ctx(doing)?;
        Ok((delivery, Instant::now()))
    });
    waiter.ensure_blocked(h.settle(), because).await?;
    Ok(waiter)
}

/// The end of a reliable-delivery case: every item acknowledged, so `len()` is 0 and
/// `try_dequeue` finds nothing.
async fn ensure_emptied(queue: &dyn Queue) -> Check<()> {
    let left = within(PROMPT, "len() at the end", queue.len()).await?;
    ensure!(
        left == 0,
        "len() is {left} after every item was acknowledged"
    );
    let empty = within(PROMPT, "try_dequeue at the end", queue.try_dequeue()).await?;
    ensure!(
        empty.is_none(),
        "an acknowledged item came out again: {empty:?}"
    );
    Ok(())
}

/// At most ten of `items`, for evidence.
fn summary(items: &[String]) -> String {
    let mut shown = items
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 10 {
        shown.push_str(", ...");
    }
    shown
}

/// Items enqueued for the lost-replies case.
const LOST_REPLY_ITEMS: usize = 60;

/// Lost replies to claims: a consumer reaches the store through the partition proxy,
/// which resets every connection every few tens of milliseconds, so claims whose
/// write was applied lose their reply and dequeues are dropped mid-claim by short
/// timeouts. Every item must still be delivered exactly once: to that consumer, or
/// afterwards to a direct client draining what was put back.
async fn lost_replies(h: Harness) -> Check {
    let name = h.name("jobs").ctx("naming the queue")?;
    let partition = proxied_client(h.faults(), h.backend().as_ref(), "", "the consumer").await?;
    let producer = h.backend().queue(name.clone()).ctx("making the producer")?;
    for i in 0..LOST_REPLY_ITEMS {
        producer
            .enqueue(format!("item-{i:03}"))
            .bounded("enqueueing")
            .await?;
    }
    let consumer = partition
        .backend()
        .queue(name.clone())
        .ctx("making the consumer")?;
    let fault_period = Duration::from_secs(4);
    let partition: Arc<dyn crate::faults::Partitioned> = Arc::from(partition);
    let switch = Arc::clone(&partition);
    let faults = tokio::spawn(async move {
        let (mut round, until) = (0u64, Instant::now() + fault_period);
        while Instant::now() < until {
            round += 1;
            tokio::time::sleep(Duration::from_millis(15 + round * 7 % 20)).await;
            switch.set(PartitionMode::Reset);
            tokio::time::sleep(Duration::from_millis(5 + round * 3 % 10)).await;
            switch.set(PartitionMode::Forward);
        }
        round
    });
    let mut delivered: Vec<Bytes> = Vec::new();
    let mut limits = [1u64, 3, 10, 50, 200].into_iter().cycle();
    let mut failed = 0usize;
    while !faults.is_finished() {
        let limit = Duration::from_millis(limits.next().unwrap_or(10));
        match tokio::time::timeout(limit, consumer.try_dequeue()).await {
            Ok(Ok(Some(item))) => delivered.push(item),
            Ok(Err(_)) => failed += 1,
            Ok(Ok(None)) | Err(_) => {}
        }
        // Spread the dequeues over the whole fault period.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let resets = within(PROMPT, "the fault task", async {
        faults
            .await
            .map_err(|error| distsync_core::Error::backend("conformance", error.to_string()))
    })
    .await?;
    partition.set(PartitionMode::Forward);
    let through_proxy = delivered.len();
    // What was not delivered is in the queue, or on its way back (claims and put-backs
    // finish in the background once the consumer's connection works again).
    let drain = h.backend().queue(name).ctx("making the draining client")?;
    let deadline = Instant::now() + LONG;
    while delivered.len() < LOST_REPLY_ITEMS && Instant::now() < deadline {
        match drain.try_dequeue().bounded("draining").await? {
            Some(item) => delivered.push(item),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let (counts, twice) = tally(&delivered);
    ensure!(twice.is_empty(), "delivered twice: {}", summary(&twice));
    ensure!(
        counts.len() == LOST_REPLY_ITEMS,
        "items lost: {} of {LOST_REPLY_ITEMS} delivered within {LONG:?} after the faults",
        counts.len()
    );
    let rest = drain
        .try_dequeue()
        .bounded("checking the queue is empty")
        .await?;
    ensure!(
        rest.is_none(),
        "an item came out once all were seen: {rest:?}"
    );
    drop(partition);
    Ok(Holds::figure(
        format!(
            "{LOST_REPLY_ITEMS} items once each across {resets} resets ({through_proxy} through \
             the proxy, {failed} failed dequeues)"
        ),
        "claims whose replies were lost were recovered or put back",
    ))
}

/// Reliable delivery, session end: consumer A receives the first of three items
/// through its session, which the store then ends (as after a crash or a partition);
/// consumer B, already waiting, receives the same item first (at its place, before
/// the others) with a redelivery count of 1, then the others in order, and its
/// acknowledgements empty the queue. A's late `ack` must fail.
async fn reliable_session_end(h: Harness) -> Check {
    let (name, queue) = new_queue(&h)?;
    enqueue_all(
        &*queue,
        ["first", "second", "third"].map(|item| (item, None)),
    )
    .await?;
    let a = h.fault_session().set_up("opening A's session").await?;
    let held = within(PROMPT, "A receiving", queue.receive(&a)).await?;
    ensure!(
        held.item().as_ref() == b"first" && held.redeliveries() == 0,
        "A's first receive gave {:?} (redeliveries {})",
        held.item(),
        held.redeliveries()
    );
    let b = h.session().set_up("opening B's session").await?;
    let len = within(PROMPT, "len() while A holds an item", queue.len()).await?;
    ensure!(len == 2, "len() is {len} with one of three items held");
    // B takes the other two, and then waits: nothing is left but A's item.
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(within(PROMPT, "B receiving", queue.receive(&b)).await?);
    }
    let got: Vec<&[u8]> = others.iter().map(|d| d.item().as_ref()).collect();
    ensure!(
        got == [&b"second"[..], &b"third"[..]],
        "while A held the first item, B received {got:?}"
    );
    for delivery in others {
        delivery.ack().bounded("B acknowledging").await?;
    }
    let mut waiter = waiting_receiver(&h, name, &b, "B", "A holds the only item").await?;
    let ended = Instant::now();
    within(
        PROMPT,
        "ending A's session from the store",
        h.end_session(&a),
    )
    .await?;
    let (again, at) = waiter.join(h.fault_ttl() * 3 + PROMPT).await?;
    ensure!(
        again.item().as_ref() == b"first" && again.redeliveries() == 1,
        "after A's session ended, B received {:?} with redelivery count {} (expected \"first\", 1)",
        again.item(),
        again.redeliveries()
    );
    match held.ack().await {
        Err(_) => {}
        Ok(()) => {
            return violated("A acknowledged an item redelivered to B after A's session ended")
        }
    }
    again.ack().bounded("B acknowledging").await?;
    ensure_emptied(&*queue).await?;
    Ok(Holds::figure(
        format!(
            "redelivered {} after the session ended",
            ms(at.saturating_duration_since(ended))
        ),
        "A's session ended by the store while holding an item: the waiting B got it, first, \
         redelivery count 1; A's ack refused",
    ))
}

/// Reliable delivery, nack: items at two priorities; the first is received and
/// nacked, a dropped delivery is nacked too, and each comes back at its place (before
/// the items behind it, behind a higher priority enqueued meanwhile) with its
/// redelivery count one higher; `dequeue` (at most once) skips held items.
async fn reliable_nack_keeps_place(h: Harness) -> Check {
    let (_, queue) = new_queue(&h)?;
    let session = h.session().set_up("opening a session").await?;
    enqueue_all(
        &*queue,
        [("p5-a", Some(5)), ("p5-b", Some(5)), ("p9", Some(9))],
    )
    .await?;
    let first = within(PROMPT, "receiving", queue.receive(&session)).await?;
    ensure!(
        first.item().as_ref() == b"p5-a",
        "received {:?} first",
        first.item()
    );
    let second = within(PROMPT, "receiving", queue.receive(&session)).await?;
    let skipped = within(PROMPT, "dequeue while two are held", queue.try_dequeue()).await?;
    ensure!(
        skipped.as_deref() == Some(&b"p9"[..]),
        "dequeue with p5-a and p5-b held gave {skipped:?}"
    );
    enqueue_all(&*queue, [("p1", Some(1)), ("p7", Some(7))]).await?;
    first.nack().bounded("nacking").await?;
    drop(second); // nacked in the background
                  // Receive once the dropped delivery's item is back: before, the next receive may
                  // rightly give p7, behind which p5-b has not returned yet (`len()` counts the
                  // items not held).
    eventually(
        PROMPT,
        "the dropped delivery's item back in the queue",
        || async {
            let len = queue.len().await.ctx("len() after the nacks")?;
            Ok((len == 4).then_some(()))
        },
    )
    .await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + PROMPT;
    while got.len() < 4 {
        ensure!(
            Instant::now() < deadline,
            "after the nacks only {got:?} came back within {PROMPT:?}"
        );
        match within(PROMPT, "try_receive", queue.try_receive(&session)).await? {
            Some(delivery) => {
                got.push((
                    String::from_utf8_lossy(delivery.item()).into_owned(),
                    delivery.redeliveries(),
                ));
                delivery.ack().bounded("acknowledging").await?;
            }
            // The dropped delivery's background nack is on its way.
            None => tokio::task::yield_now().await,
        }
    }
    let expected = [("p1", 0), ("p5-a", 1), ("p5-b", 1), ("p7", 0)];
    let matches = got.len() == expected.len()
        && got
            .iter()
            .zip(expected)
            .all(|((item, n), (e, en))| item == e && *n == en);
    ensure!(
        matches,
        "received {got:?}, expected {expected:?} (item, redeliveries)"
    );
    Ok(Holds::new(
        "nack and a dropped delivery return the item at its place, redelivery count +1; dequeue skips held items",
    ))
}

/// Reliable delivery under concurrent consumers: 4 consumers, each through its own
/// session, receive 200 items while a producer enqueues them; each bounds its
/// `receive` by 200 ms (so some are cancelled, some after their claim), and nacks
/// about one delivery in five and acknowledges the rest. No item is ever held by two
/// consumers at once, every item is acknowledged exactly once, each consumer sees
/// first deliveries in queue order apart from items a cancelled receive put back, and
/// the queue ends empty.
///
/// A receive cancelled after its claim puts its item back uncounted (it delivered
/// nothing, see `distsync_core::delivery`), and later items may have been received
/// meanwhile: that item's first delivery then comes after a later one's. Each such
/// item needs a cancelled receive of its own, so their number is judged against the
/// cancelled receives once every consumer is done.
async fn reliable_concurrent(h: Harness) -> Check {
    const ITEMS: usize = 200;
    const CONSUMERS: usize = 4;
    let name = h.name("queue").ctx("naming the queue")?;
    let shared = Consumed {
        held: Arc::new(Mutex::new(std::collections::BTreeSet::<Bytes>::new())),
        acked: Arc::new(Mutex::new(Vec::<Bytes>::new())),
        early: Arc::new(Mutex::new(Vec::<String>::new())),
        count: Arc::new(AtomicUsize::new(0)),
        cancelled: Arc::new(AtomicUsize::new(0)),
    };
    let started = Instant::now();
    let mut consumers = Vec::new();
    for c in 0..CONSUMERS {
        let queue = h
            .backend()
            .queue(name.clone())
            .ctx("making a consumer's queue")?;
        let session = h.session().set_up("opening a consumer's session").await?;
        consumers.push(Task::spawn(
            format!("consumer {c}"),
            consume(c, ITEMS, queue, session, shared.clone()),
        ));
    }
    let producer = h.backend().queue(name.clone()).ctx("making the producer")?;
    for i in 0..ITEMS {
        producer
            .enqueue(format!("item-{i:04}"))
            .bounded("enqueueing")
            .await?;
    }
    let nacks: usize = join_all(&mut consumers, LONG + PROMPT)
        .await?
        .into_iter()
        .sum();
    let acked = std::mem::take(&mut *lock_vec(&shared.acked));
    let (counts, twice) = tally(&acked);
    ensure!(
        twice.is_empty(),
        "items acknowledged twice: {}",
        summary(&twice)
    );
    ensure!(
        counts.len() == ITEMS,
        "{} of {ITEMS} items acknowledged",
        counts.len()
    );
    let cancelled = shared.cancelled.load(Ordering::SeqCst);
    let early = std::mem::take(&mut *lock_vec(&shared.early));
    ensure!(
        early.len() <= cancelled,
        "{} first deliveries out of queue order but only {cancelled} receives were \
         cancelled (each item put back by a cancelled receive needs one): {}",
        early.len(),
        summary(&early)
    );
    let left = within(PROMPT, "len() at the end", producer.len()).await?;
    ensure!(
        left == 0,
        "len() is {left} after every item was acknowledged"
    );
    Ok(Holds::figure(
        format!(
            "{ITEMS} items, {nacks} nacks, {cancelled} cancelled receives, {} first \
             deliveries after a later item, {}",
            early.len(),
            per_second(ITEMS, started.elapsed())
        ),
        format!(
            "{CONSUMERS} consumers with their own sessions: never held by two, each \
             acknowledged once, first deliveries in order but for items put back by \
             cancelled receives"
        ),
    ))
}

/// What the consumers of [`reliable_concurrent`] share: the items held now, those
/// acknowledged, the first deliveries out of order, the count acknowledged and the
/// receives cancelled.
#[derive(Clone)]
struct Consumed {
    held: Arc<Mutex<std::collections::BTreeSet<Bytes>>>,
    acked: Arc<Mutex<Vec<Bytes>>>,
    early: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

/// Consumer `c` of [`reliable_concurrent`]: receives (each receive bounded by 200 ms)
/// until `items` are acknowledged, nacking about one delivery in five; returns its
/// nacks.
async fn consume(
    c: usize,
    items: usize,
    queue: Box<dyn Queue>,
    session: Session,
    shared: Consumed,
) -> Check<usize> {
    let Consumed {
        held,
        acked,
        early,
        count,
        cancelled,
    } = shared;
    let mut rng = Rng::new(c as u64 + 11);
    let mut nacks = 0usize;
    let mut last_first_delivery: Option<Bytes> = None;
    // A store that stops delivering leaves the count standing still; a loaded machine
    // only slows it down. So the bound is on a count that stands still, not on the whole.
    let (mut seen, mut since) = (count.load(Ordering::SeqCst), Instant::now());
    while count.load(Ordering::SeqCst) < items {
        let now = count.load(Ordering::SeqCst);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        ensure!(
            since.elapsed() < LONG,
            "consumer {c} gave up: the acknowledged count stood at {now} of {items} for {LONG:?}"
        );
        let delivery =
            match tokio::time::timeout(Duration::from_millis(200), queue.receive(&session)).await {
                Ok(delivery) => delivery.ctx(format!("consumer {c} receiving"))?,
                Err(_) => {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            };
        let item = delivery.item().clone();
        if !lock_vec(&held).insert(item.clone()) {
            return violated(format!(
                "consumer {c} received {} while another consumer held it",
                String::from_utf8_lossy(&item)
            ));
        }
        // Held for a turn of the other consumers, as a consumer works on it.
        tokio::task::yield_now().await;
        let order = if delivery.redeliveries() > 0 {
            Ok(())
        } else {
            // First deliveries come in queue order (items are numbered), but
            // for items a cancelled receive put back (judged at the end).
            match &last_first_delivery {
                Some(last) if item == *last => violated(format!(
                    "consumer {c} received {} twice as a first delivery",
                    String::from_utf8_lossy(&item)
                )),
                Some(last) if item < *last => {
                    lock_vec(&early).push(format!(
                        "{} after {}",
                        String::from_utf8_lossy(&item),
                        String::from_utf8_lossy(last)
                    ));
                    Ok(())
                }
                _ => {
                    last_first_delivery = Some(item.clone());
                    Ok(())
                }
            }
        };
        // Release the in-flight mark before the store can give the item out,
        // and on every way out: a mark left behind reads as a second holder.
        lock_vec(&held).remove(&item);
        order?;
        let nack = rng.below(5) == 0;
        if nack {
            nacks += 1;
            delivery
                .nack()
                .bounded(format!("consumer {c} nacking"))
                .await?;
        } else {
            lock_vec(&acked).push(item);
            delivery
                .ack()
                .bounded(format!("consumer {c} acknowledging"))
                .await?;
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
    drop(session);
    Ok(nacks)
}

/// Reliable delivery, consumer crash: a consumer in a child process receives the first
/// of two items and is killed (SIGKILL) before acknowledging it. While its session
/// lives, nobody else gets that item (another consumer gets the second, then finds
/// nothing); once the session's TTL has run out, a waiting consumer receives it with
/// a redelivery count of 1, and acknowledging it empties the queue. The memory store
/// has no child process: its holder's lease is frozen instead (the store then sees
/// what a SIGKILL shows it: no more renewals).
async fn reliable_consumer_crash(h: Harness) -> Check {
    let (name, queue) = new_queue(&h)?;
    enqueue_all(&*queue, ["first", "second"].map(|item| (item, None))).await?;
    let mut consumer = h
        .spawn_holder(HoldKind::Delivery, "queue")
        .await
        .set_up_ctx("starting a consumer that receives the first item")?;
    ensure!(
        consumer.token().get() == 1,
        "{} received its item as delivery number {} (expected the first delivery)",
        consumer.describe(),
        consumer.token()
    );
    let session = h
        .session()
        .set_up("opening the other consumer's session")
        .await?;
    let other = within(
        PROMPT,
        "receiving beside the consumer",
        queue.try_receive(&session),
    )
    .await?;
    match other {
        Some(delivery) if delivery.item().as_ref() == b"second" => {
            delivery
                .ack()
                .bounded("acknowledging the second item")
                .await?;
        }
        Some(delivery) => {
            return violated(format!(
                "while {} held the first item, another consumer received {:?} (redeliveries {})",
                consumer.describe(),
                delivery.item(),
                delivery.redeliveries()
            ))
        }
        None => return violated("the second item was not receivable beside the held first"),
    }
    let nothing = within(
        PROMPT,
        "try_receive with only the held item left",
        queue.try_receive(&session),
    )
    .await?;
    if let Some(delivery) = nothing {
        return violated(format!(
            "{:?} was received while {} held it",
            delivery.item(),
            consumer.describe()
        ));
    }
    let mut waiter = waiting_receiver(
        &h,
        name,
        &session,
        "the waiting consumer",
        "the live consumer holds the only item",
    )
    .await?;
    let crashed = Instant::now();
    let how = match consumer.kill().await {
        Ok(()) => "SIGKILL",
        Err(Error::Unsupported { .. }) => {
            consumer
                .pause()
                .await
                .ctx("freezing the consumer's lease (no child process)")?;
            "frozen lease"
        }
        Err(error) => return violated(format!("killing the consumer: {error}")),
    };
    let (again, at) = waiter.join(h.holder_ttl() * 3 + PROMPT).await?;
    let took = at.saturating_duration_since(crashed);
    ensure!(
        again.item().as_ref() == b"first" && again.redeliveries() == 1,
        "after the consumer's {how}, the waiter received {:?} with redelivery count {} (expected \"first\", 1)",
        again.item(),
        again.redeliveries()
    );
    again
        .ack()
        .bounded("acknowledging the redelivered item")
        .await?;
    ensure_emptied(&*queue).await?;
    drop(session);
    Ok(Holds::figure(
        format!("redelivered {} after {how}", ms(took)),
        format!(
            "{} received an item and was stopped ({how}) before acknowledging it; nobody else \
             got it meanwhile; a waiter got it after the session's TTL ({:?}), redelivery \
             count 1",
            consumer.describe(),
            h.holder_ttl()
        ),
    ))
}
