//! Dequeues dropped by a caller's timeout: a claim that landed after its call was
//! dropped goes to the handle's next dequeue, so a lone consumer whose calls keep
//! timing out still gets every item once, in order.

use distsync_core::Primitives;
use std::time::Duration;

/// Items enqueued, then taken by one consumer whose dequeues mostly time out.
const ITEMS: usize = 40;
/// The timeouts the consumer's dequeues cycle through: most shorter than a claim
/// takes, one long enough for a whole dequeue, so that the loop makes progress.
const TIMEOUTS_MS: [u64; 6] = [0, 1, 2, 3, 5, 500];
/// The most the whole drain may take (a few seconds on two loaded cores).
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_consumer_with_timeouts_gets_every_item_once_in_order() {
    let Some(url) = crate::common::url("it-queue-dropped") else {
        return;
    };
    let backend = distsync_nats::backend(&url).await.expect("connecting");
    let name = crate::common::unique_name("dropped");
    let queue = backend.queue(name).expect("a queue");
    let expected: Vec<String> = (0..ITEMS).map(|i| format!("item-{i:03}")).collect();
    for item in &expected {
        queue.enqueue(item.clone()).await.expect("enqueueing");
    }

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (mut got, mut cancelled, mut call) = (Vec::new(), 0usize, 0usize);
    while got.len() < ITEMS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {ITEMS} items after {DEADLINE:?} ({cancelled} dequeues timed out): {got:?}",
            got.len()
        );
        let limit = Duration::from_millis(TIMEOUTS_MS[call % TIMEOUTS_MS.len()]);
        call += 1;
        match tokio::time::timeout(limit, queue.dequeue()).await {
            Ok(item) => {
                let item = item.expect("dequeueing");
                got.push(String::from_utf8(item.to_vec()).expect("an item we wrote"));
            }
            Err(_) => cancelled += 1,
        }
    }
    assert_eq!(
        got, expected,
        "items out of order or twice ({cancelled} dequeues timed out)"
    );
    assert_eq!(queue.try_dequeue().await.expect("try_dequeue"), None);
    assert_eq!(queue.len().await.expect("len"), 0);
}
