//! Queues and listings at scale: a claim reads the head of a queue, never all of it,
//! and status (which counts the queue's items) and export read a bucket of more keys
//! than one batched direct get returns.
//!
//! The consumers receive part of the queue, not all of it: their first claims read a
//! queue of more items than one batched direct get returns, which is what a claim that
//! read the whole queue fails on, and their part crosses from one priority to the
//! next. Receiving the rest would measure the consumers' contention for the head (seven
//! of eight lose each race), about 80 s of a loaded CI runner, and nothing more of the
//! listing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::{Backend, SessionOptions};
use futures::{StreamExt, TryStreamExt};

/// Items enqueued: more than the 1,024 keys one batched direct get returns (status 413
/// past that), so that a claim reading the whole queue, or a listing that is not
/// paged, fails here.
const ITEMS: usize = 1_500;
/// Items the consumers receive and acknowledge: more than the 500 of one priority, so
/// that the head moves on to the next.
const RECEIVED: usize = 600;
/// Consumers draining them at once, each with a session of its own.
const CONSUMERS: usize = 8;
/// The most the enqueues, the status call, the export and the receiving may each take:
/// a bound on a hang, not a measure of speed (the receiving takes about 35 s on a
/// loaded two-core CI runner, a debug build).
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_items_drain_and_status_reads_a_big_bucket() {
    let Some(url) = crate::common::url("it-scale") else {
        return;
    };
    let backend: Arc<dyn Backend> =
        Arc::from(distsync_nats::backend(&url).await.expect("connecting"));
    let name = crate::common::unique_name("scale");
    let queue = Arc::new(backend.queue(name.clone()).expect("a queue"));

    let enqueued = tokio::time::timeout(
        DEADLINE,
        futures::stream::iter(0..ITEMS)
            .map(|n| {
                let queue = Arc::clone(&queue);
                // Three priorities, so that a claim walks more than one.
                async move {
                    let priority = u16::try_from(n % 3).unwrap_or(0);
                    queue.enqueue_with_priority(n.to_string(), priority).await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>(),
    )
    .await;
    enqueued
        .expect("enqueueing within the deadline")
        .expect("enqueueing");

    // Every item is a key of the bucket (and so is its delivery record): more than
    // one batched direct get returns.
    let report = tokio::time::timeout(DEADLINE, backend.status(""))
        .await
        .expect("status within the deadline");
    let report = report.expect("status of a bucket of thousands of keys");
    // Counted from that listing, read in pages: every item ready, none in flight.
    let listed: Vec<_> = report
        .queues
        .iter()
        .filter(|queue| queue.name == name.as_str())
        .map(|queue| (queue.ready, queue.in_flight))
        .collect();
    assert_eq!(listed, [(ITEMS, 0)], "the queue in the status report");
    // The export reads the same listing: every item, by priority.
    let snapshot = tokio::time::timeout(DEADLINE, backend.export())
        .await
        .expect("export within the deadline")
        .expect("export of a bucket of thousands of keys");
    let items = snapshot.queues.get(&name).expect("the queue exported");
    assert_eq!(items.len(), ITEMS);
    assert!(items
        .windows(2)
        .all(|two| two[0].priority <= two[1].priority));
    assert!(backend.count_prefix(&name).await.expect("counting") >= ITEMS as u64);
    assert_eq!(queue.len().await.expect("the queue's length"), ITEMS);

    let reserved = Arc::new(AtomicUsize::new(0));
    let drained = futures::future::try_join_all((0..CONSUMERS).map(|_| {
        let (backend, queue, reserved) = (
            Arc::clone(&backend),
            Arc::clone(&queue),
            Arc::clone(&reserved),
        );
        async move {
            let session = backend.session(SessionOptions::default()).await?;
            let mut seen = Vec::new();
            while reserved.fetch_add(1, Ordering::Relaxed) < RECEIVED {
                let delivery = queue.receive(&session).await?;
                seen.push(delivery.item().clone());
                delivery.ack().await?;
            }
            session.close().await?;
            Ok::<_, distsync_core::Error>(seen)
        }
    }));
    let received = tokio::time::timeout(DEADLINE, drained)
        .await
        .expect("receiving within the deadline")
        .expect("receiving");
    let items: HashSet<Bytes> = received.iter().flatten().cloned().collect();
    assert_eq!(
        (items.len(), received.iter().map(Vec::len).sum::<usize>()),
        (RECEIVED, RECEIVED),
        "each item received once"
    );
    assert_eq!(
        queue.len().await.expect("the queue's length"),
        ITEMS - RECEIVED,
        "the items not received are still queued"
    );
    backend
        .purge_prefix(&name)
        .await
        .expect("purging the queue");
}
