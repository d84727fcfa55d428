//! Queue ages on the server's clock: an item's age is its enqueue message's time stamp
//! against a fresh reading of the server's clock, a receive and its `nack` leave it
//! (they rewrite the delivery record, never the item), and a held item is not counted.

use distsync_core::Primitives;
use std::time::{Duration, Instant};

use distsync_core::{Backend, SessionOptions};

/// How long the item waits before its age is read.
const WAITED: Duration = Duration::from_millis(300);
/// How far the server's wall clock and this process's monotonic one may drift apart
/// during the test.
const DRIFT: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_items_age_runs_on_the_servers_clock_through_a_nack() {
    let Some(url) = crate::common::url("it-queue-age") else {
        return;
    };
    let backend = distsync_nats::backend(&url).await.expect("connecting");
    let queue = backend
        .queue(crate::common::unique_name("age"))
        .expect("a queue");
    assert_eq!(queue.oldest_age().await.expect("an age"), None);

    let before = Instant::now();
    queue.enqueue("job").await.expect("enqueueing");
    let enqueued = Instant::now();
    // Time that must show in the age; not a wait for anything to happen.
    tokio::time::sleep(WAITED).await;
    // The server runs on this machine, so its clock and this one agree.
    let asked = enqueued.elapsed();
    let age = queue.oldest_age().await.expect("an age").expect("one item");
    assert!(
        age + DRIFT >= asked && age <= before.elapsed() + DRIFT,
        "age {age:?}: the item was enqueued between {asked:?} and {:?} before the answer",
        before.elapsed()
    );

    // A receive holds the item: a held item has no age in the queue's answer.
    let session = backend
        .session(SessionOptions::default())
        .await
        .expect("a session");
    let delivery = queue.receive(&session).await.expect("a delivery");
    assert_eq!(queue.oldest_age().await.expect("an age"), None);
    // Its nack puts it back in its place, with its age from its enqueue.
    delivery.nack().await.expect("a nack");
    let asked = enqueued.elapsed();
    let age = queue.oldest_age().await.expect("an age").expect("one item");
    assert!(
        age + DRIFT >= asked && age <= before.elapsed() + DRIFT,
        "age {age:?} after the nack: the item was enqueued between {asked:?} and {:?} \
         before the answer",
        before.elapsed()
    );

    queue
        .receive(&session)
        .await
        .expect("a delivery")
        .ack()
        .await
        .expect("an ack");
    assert_eq!(queue.oldest_age().await.expect("an age"), None);
}
