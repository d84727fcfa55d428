//! What a queue's metrics read from the store: the depth (`Queue::len`), the oldest
//! item's age (`Queue::oldest_age`), the redelivery count a delivery carries (which
//! `distsync_consumer_redeliveries_total` counts), and the dead-letter queue a
//! consumer fills (`distsync_consumer_dead_lettered_total`). The counters themselves
//! are kept in the client, the same on every backend; these cases measure the store's
//! side, which differs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync_core::consumer::ConsumerOptions;
use distsync_core::{BoxError, Bytes, Coordinator};

use crate::check::{
    ensure, eventually, ms, violated, within, Check, Context, Fail, Holds, LONG, PROMPT,
};
use crate::harness::Harness;

/// Items enqueued by the depth case.
const DEPTH_ITEMS: usize = 3;

/// The processing deadline of the redelivery case: the store plays no part in it.
const DEADLINE: Duration = Duration::from_millis(100);

/// How much the oldest item's age must grow while the case waits: well above any
/// store clock's resolution (Redis counts milliseconds).
const AGE_GROWTH: Duration = Duration::from_millis(300);

/// After 3 enqueues the depth is 3; a receive holds one, so the depth is 2, and stays
/// 2 after its ack; draining leaves 0.
pub(super) async fn depth(h: Harness) -> Check {
    let name = h.name("depth").ctx("naming the queue")?;
    let queue = Coordinator::from_arc(h.backend().clone())
        .queue(name.as_str())
        .ctx("making the queue")?;
    for n in 0..DEPTH_ITEMS {
        within(PROMPT, "enqueuing", queue.enqueue(format!("item-{n}"))).await?;
    }
    let full = within(PROMPT, "len() after the enqueues", queue.len()).await?;
    ensure!(
        full == DEPTH_ITEMS,
        "depth {full} after {DEPTH_ITEMS} enqueues"
    );
    let session = within(PROMPT, "opening the session", h.session()).await?;
    let delivery = within(PROMPT, "receiving", queue.receive(&session)).await?;
    let held = within(PROMPT, "len() while one item is held", queue.len()).await?;
    ensure!(
        held == DEPTH_ITEMS - 1,
        "depth {held} with one of {DEPTH_ITEMS} items received (a held item is not queued)"
    );
    within(PROMPT, "acknowledging", delivery.ack()).await?;
    let acked = within(PROMPT, "len() after the ack", queue.len()).await?;
    ensure!(acked == DEPTH_ITEMS - 1, "depth {acked} after the ack");
    while within(PROMPT, "draining", queue.try_dequeue())
        .await?
        .is_some()
    {}
    let empty = within(PROMPT, "len() after draining", queue.len()).await?;
    ensure!(empty == 0, "depth {empty} after draining the queue");
    let _ = session.close().await;
    Ok(Holds::new(format!(
        "depth {DEPTH_ITEMS} after {DEPTH_ITEMS} enqueues, {} with one received and after its \
         ack, 0 drained",
        DEPTH_ITEMS - 1
    )))
}

/// An item's first delivery counts 0 redeliveries; after a nack it comes back counting
/// 1; after a handler passes the processing deadline (held with
/// `Delivery::while_held`, then returned with `nack_after`, as the consumer does) it
/// comes back counting 2.
pub(super) async fn redeliveries(h: Harness) -> Check {
    let name = h.name("redeliveries").ctx("naming the queue")?;
    let queue = Coordinator::from_arc(h.backend().clone())
        .queue(name.as_str())
        .ctx("making the queue")?;
    within(PROMPT, "enqueuing", queue.enqueue("job")).await?;
    let session = within(PROMPT, "opening the session", h.session()).await?;
    let first = within(PROMPT, "the first receive", queue.receive(&session)).await?;
    ensure!(
        first.redeliveries() == 0 && !first.is_redelivered(),
        "the first delivery counts {} redeliveries",
        first.redeliveries()
    );
    within(PROMPT, "nacking", first.nack()).await?;
    let second = within(PROMPT, "receiving after the nack", queue.receive(&session)).await?;
    ensure!(
        second.redeliveries() == 1 && second.is_redelivered(),
        "after a nack the item counts {} redeliveries (expected 1)",
        second.redeliveries()
    );
    let hung = within(
        PROMPT,
        "holding the item through a hung handler",
        second.while_held(tokio::time::timeout(DEADLINE, std::future::pending::<()>())),
    )
    .await?;
    ensure!(hung.is_err(), "a handler that never finishes finished");
    second.nack_after(Duration::ZERO);
    let third = within(
        PROMPT,
        "receiving after the processing deadline",
        queue.receive(&session),
    )
    .await?;
    ensure!(
        third.redeliveries() == 2,
        "after the processing deadline the item counts {} redeliveries (expected 2)",
        third.redeliveries()
    );
    within(PROMPT, "acknowledging", third.ack()).await?;
    let _ = session.close().await;
    Ok(Holds::new(
        "redeliveries 0, then 1 after a nack, then 2 after a handler passed the processing \
         deadline",
    ))
}

/// A consumer with `max_deliveries` 2 over an item its handler always fails: the
/// handler is called twice, then the item is in the dead-letter queue (depth 1) and
/// not in the consumed queue.
pub(super) async fn dead_lettered(h: Harness) -> Check {
    const MAX: u32 = 2;
    let coordinator = Coordinator::from_arc(h.backend().clone());
    let name = h.name("dead-lettered").ctx("naming the queue")?;
    let options = ConsumerOptions::default()
        .max_deliveries(MAX)
        .retry(Duration::from_millis(10), Duration::from_millis(50));
    let consumer = coordinator
        .consumer(name.as_str(), options)
        .ctx("making the consumer")?;
    let queue = consumer.queue().clone();
    let dead = consumer.dead_letter_queue().clone();
    within(PROMPT, "enqueuing", queue.enqueue("poison")).await?;
    let session = within(PROMPT, "opening the session", h.session()).await?;
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let calls = Arc::clone(&calls);
        move |_item: Bytes| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), BoxError>("poison".into()) }
        }
    };
    let run = consumer.run(&session, handler);
    let moved = eventually(LONG, "the item reaching the dead-letter queue", || {
        let dead = Arc::clone(&dead);
        async move {
            let len = dead.len().await.ctx("len() of the dead-letter queue")?;
            Ok((len > 0).then_some(len))
        }
    });
    // The consumed queue is read while the consumer still runs: the dead-letter item is
    // visible once enqueued there, before the consumer acknowledges the original, and a
    // consumer stopped in between leaves the item in both queues (see the consumer's
    // docs), which would say nothing of the library.
    let moved_and_left = async {
        let dead_len = moved.await?;
        let left = within(PROMPT, "len() of the consumed queue", queue.len()).await?;
        Ok::<_, Fail>((dead_len, left))
    };
    let (dead_len, left) = tokio::select! {
        error = run => return violated(format!("the consumer's run ended: {error}")),
        checked = moved_and_left => checked?,
    };
    let calls = calls.load(Ordering::SeqCst);
    ensure!(
        dead_len == 1,
        "{dead_len} items in the dead-letter queue (expected 1)"
    );
    ensure!(
        calls == MAX,
        "the handler was called {calls} times before dead-lettering (max_deliveries {MAX})"
    );
    ensure!(left == 0, "{left} items left in the consumed queue");
    let purged = within(PROMPT, "purging the dead letters", consumer.purge()).await?;
    ensure!(purged == 1, "purge() removed {purged} items (expected 1)");
    let _ = session.close().await;
    Ok(Holds::new(format!(
        "dead-letter depth 1 after {MAX} failed deliveries (max_deliveries {MAX}), the \
         consumed queue empty"
    )))
}

/// The oldest item's age: none on an empty queue; after an enqueue it grows with time
/// on the store's clock; it is none while the only item is held and after its ack; an
/// item enqueued then starts again from near zero.
pub(super) async fn oldest_age(h: Harness) -> Check {
    let name = h.name("oldest-age").ctx("naming the queue")?;
    let queue = Coordinator::from_arc(h.backend().clone())
        .queue(name.as_str())
        .ctx("making the queue")?;
    let empty = within(PROMPT, "oldest_age() of an empty queue", queue.oldest_age()).await?;
    ensure!(empty.is_none(), "an empty queue's oldest age is {empty:?}");
    within(PROMPT, "enqueuing", queue.enqueue("old")).await?;
    let young = within(PROMPT, "oldest_age() after the enqueue", queue.oldest_age())
        .await?
        .unwrap_or_default();
    let grown = eventually(LONG, "the oldest age growing", || {
        let queue = Arc::clone(&queue);
        async move {
            let age = queue.oldest_age().await.ctx("oldest_age()")?;
            match age {
                None => violated("a queue with one item has no oldest age"),
                Some(age) => Ok((age >= young + AGE_GROWTH).then_some(age)),
            }
        }
    })
    .await?;
    let session = within(PROMPT, "opening the session", h.session()).await?;
    let delivery = within(PROMPT, "receiving", queue.receive(&session)).await?;
    let held = within(PROMPT, "oldest_age() while held", queue.oldest_age()).await?;
    ensure!(
        held.is_none(),
        "the oldest age is {held:?} while the only item is held (held items are not queued)"
    );
    within(PROMPT, "acknowledging", delivery.ack()).await?;
    let acked = within(PROMPT, "oldest_age() after the ack", queue.oldest_age()).await?;
    ensure!(acked.is_none(), "the oldest age is {acked:?} after the ack");
    within(PROMPT, "enqueuing again", queue.enqueue("new")).await?;
    let fresh = within(PROMPT, "oldest_age() of a new item", queue.oldest_age())
        .await?
        .unwrap_or_default();
    ensure!(
        fresh < grown,
        "a new item's age {} is not below the acknowledged one's {}",
        ms(fresh),
        ms(grown)
    );
    within(PROMPT, "draining", queue.dequeue()).await?;
    let _ = session.close().await;
    Ok(Holds::figure(
        format!("grew to {}", ms(grown)),
        format!(
            "none when empty, grows on the store's clock ({} to {}), none while held and after \
             the ack, {} for a new item",
            ms(young),
            ms(grown),
            ms(fresh)
        ),
    ))
}
