//! Queue cases: FIFO, priority order, no loss and no duplicate under cancelled
//! consumers, and the empty queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Bytes, Queue};
use tokio::time::Instant;

use crate::cases::lock::lock_vec;
use crate::check::{
    ensure, join_all, ms, per_second, violated, within, Bounded, Check, Context, Holds, Task, LONG,
    PROMPT,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;
use crate::rng::Rng;

/// FIFO: 20 items enqueued in order come out of `dequeue()` in that order.
pub(crate) async fn fifo(h: Harness) -> Check {
    const ITEMS: usize = 20;
    let queue = h
        .backend()
        .queue(h.name("queue").ctx("naming the queue")?)
        .ctx("making a queue")?;
    for i in 0..ITEMS {
        within(
            PROMPT,
            "enqueueing",
            queue.enqueue(Bytes::from(format!("item-{i:02}"))),
        )
        .await?;
    }
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
pub(crate) async fn priority(h: Harness) -> Check {
    let queue = h
        .backend()
        .queue(h.name("queue").ctx("naming the queue")?)
        .ctx("making a queue")?;
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
    for (item, priority) in items {
        let item = Bytes::from(item);
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
pub(crate) async fn no_loss_no_duplicate(h: Harness) -> Check {
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
                    return violated(format!(
                        "consumer {c} gave up after {LONG:?} with {} of {TOTAL} items delivered",
                        count.load(Ordering::SeqCst)
                    ));
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
                    .enqueue(Bytes::from(format!("p{p}-{i:03}")))
                    .bounded(format!("producer {p} enqueueing"))
                    .await?;
            }
            Ok(())
        }));
    }
    join_all(&mut producers, LONG).await?;
    let consumed = join_all(&mut consumers, LONG + PROMPT).await;
    let delivered = std::mem::take(&mut *lock_vec(&delivered));
    let mut counts = BTreeMap::<Bytes, usize>::new();
    for item in &delivered {
        *counts.entry(item.clone()).or_default() += 1;
    }
    let duplicates: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(item, n)| format!("{} x{n}", String::from_utf8_lossy(item)))
        .collect();
    ensure!(
        duplicates.is_empty(),
        "{} item(s) delivered twice: {}",
        duplicates.len(),
        summary(&duplicates)
    );
    let queue = h.backend().queue(name).ctx("making a queue")?;
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
    consumed?;
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
        format!("{TOTAL} items, {cancelled} cancelled dequeues, {}", per_second(TOTAL, started.elapsed())),
        format!("{PRODUCERS} producers, {CONSUMERS} consumers with random 0-200 ms timeouts: each item exactly once"),
    ))
}

/// `try_dequeue` on an empty queue is `None` at once; a blocked `dequeue()` gets an
/// item enqueued later.
pub(crate) async fn empty_queue(h: Harness) -> Check {
    let name = h.name("queue").ctx("naming the queue")?;
    let queue = h.backend().queue(name.clone()).ctx("making a queue")?;
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
pub(crate) async fn lost_replies(h: Harness) -> Check {
    let name = h.name("jobs").ctx("naming the queue")?;
    let partition = h
        .faults()
        .partitioned_client(h.backend().as_ref())
        .bounded("connecting the consumer through the proxy")
        .await?;
    let producer = h.backend().queue(name.clone()).ctx("making the producer")?;
    for i in 0..LOST_REPLY_ITEMS {
        producer
            .enqueue(Bytes::from(format!("item-{i:03}")))
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
    let mut counts = BTreeMap::<Bytes, usize>::new();
    for item in &delivered {
        *counts.entry(item.clone()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "delivered twice: {twice:?}");
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
            "{LOST_REPLY_ITEMS} items once each across {resets} resets ({through_proxy} through the proxy, {failed} failed dequeues)"
        ),
        "claims whose replies were lost were recovered or put back",
    ))
}
