//! distsync's ZooKeeper queue against Apache Curator's own `DistributedQueue` and
//! `DistributedPriorityQueue`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): items Java puts come out of Rust's `dequeue` and
//! `receive` in Curator's order, items Rust enqueues reach a Curator consumer in order,
//! and a Curator consumer with distsync's lock path skips the items Rust holds; none is
//! lost or delivered twice.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use std::sync::Arc;

use common::{observer, setup, unique, JavaPeer, Setup};
use distsync_core::{Bytes, Coordinator, Queue};

/// Curator's `queuePath` of the queue `name`.
fn queue_path(setup: &Setup, name: &str) -> String {
    common::node(setup, "queue", name)
}

/// Curator's `lockPath` of the queue `name`: where distsync's receivers hold items.
fn lock_path(setup: &Setup, name: &str) -> String {
    common::node(setup, "queue_lock", name)
}

/// Runs `queue-put` and waits for it to finish.
async fn java_put(setup: &Setup, name: &str, priority: &str, items: &[&str]) {
    let mut args = vec![priority];
    args.extend_from_slice(items);
    let mut put = JavaPeer::start(setup, "queue-put", &queue_path(setup, name), &args);
    put.said("put").await;
    put.exits().await;
}

async fn queue(setup: &Setup, name: &str) -> (Coordinator, Arc<dyn Queue>) {
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let queue = coordinator.queue(name).unwrap();
    (coordinator, queue)
}

/// Takes every item left with `try_dequeue`, in order.
async fn drain(queue: &dyn Queue) -> Vec<String> {
    let mut items = Vec::new();
    while let Some(item) = queue.try_dequeue().await.unwrap() {
        items.push(String::from_utf8(item.to_vec()).unwrap());
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_priority_items_come_out_of_rust_by_priority_then_arrival() {
    let Some(setup) = setup() else { return };
    let name = unique("queue-java-priority");
    java_put(&setup, &name, "5", &["p5-first", "p5-second"]).await;
    java_put(&setup, &name, "1", &["p1-first"]).await;
    java_put(&setup, &name, "0", &["p0-only"]).await;
    java_put(&setup, &name, "1", &["p1-second"]).await;
    let (coordinator, queue) = queue(&setup, &name).await;
    assert_eq!(queue.len().await.unwrap(), 5);
    let age = queue.oldest_age().await.unwrap();
    assert!(
        age.is_some(),
        "the oldest item has an age on the server's clock"
    );

    // At least once: receive and ack the first, receive and nack the second (it stays
    // first), then the rest at most once.
    let session = coordinator.session().await.unwrap();
    let first = queue.receive(&session).await.unwrap();
    assert_eq!(first.item(), "p0-only");
    first.ack().await.unwrap();
    let second = queue.receive(&session).await.unwrap();
    assert_eq!(second.item(), "p1-first");
    assert_eq!(second.redeliveries(), 0);
    second.nack().await.unwrap();
    let again = queue.receive(&session).await.unwrap();
    assert_eq!(again.item(), "p1-first");
    assert_eq!(again.redeliveries(), 1, "the nack counted a redelivery");
    again.ack().await.unwrap();
    assert_eq!(
        drain(queue.as_ref()).await,
        ["p1-second", "p5-first", "p5-second"]
    );
    assert!(queue.is_empty().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_plain_and_multi_items_come_out_of_rust_in_order() {
    let Some(setup) = setup() else { return };
    let name = unique("queue-java-plain");
    java_put(&setup, &name, "-", &["a", "b"]).await;
    // One node holding three items: distsync splits it in place.
    java_put(&setup, &name, "multi", &["m1", "m2", "m3"]).await;
    java_put(&setup, &name, "-", &["c"]).await;
    let (coordinator, queue) = queue(&setup, &name).await;
    let session = coordinator.session().await.unwrap();
    assert_eq!(queue.dequeue().await.unwrap(), "a");
    assert_eq!(queue.dequeue().await.unwrap(), "b");
    let m1 = queue.receive(&session).await.unwrap();
    assert_eq!(m1.item(), "m1");
    m1.ack().await.unwrap();
    assert_eq!(drain(queue.as_ref()).await, ["m2", "m3", "c"]);
    let zk = observer(&setup).await;
    let left = zk.list_children(&queue_path(&setup, &name)).await.unwrap();
    assert!(left.is_empty(), "nodes left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_items_reach_a_curator_consumer_in_order() {
    let Some(setup) = setup() else { return };
    let name = unique("queue-rust-to-java");
    let (_coordinator, queue) = queue(&setup, &name).await;
    queue
        .enqueue_with_priority(Bytes::from("low-1"), 7)
        .await
        .unwrap();
    queue.enqueue(Bytes::from("high-1")).await.unwrap();
    queue
        .enqueue_with_priority(Bytes::from("mid-1"), 3)
        .await
        .unwrap();
    queue.enqueue(Bytes::from("high-2")).await.unwrap();
    queue
        .enqueue_with_priority(Bytes::from("low-2"), 7)
        .await
        .unwrap();
    let mut java = JavaPeer::start(
        &setup,
        "queue-take",
        &queue_path(&setup, &name),
        &["-", "5"],
    );
    java.said("started").await;
    for expected in ["high-1", "high-2", "mid-1", "low-1", "low-2"] {
        java.said(&format!("item {expected}")).await;
    }
    java.said("done").await;
    java.exits().await;
    assert_eq!(queue.len().await.unwrap(), 0);
    assert_eq!(queue.try_dequeue().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_consumer_with_the_lock_path_skips_items_rust_holds() {
    let Some(setup) = setup() else { return };
    let name = unique("queue-held");
    let (coordinator, queue) = queue(&setup, &name).await;
    let session = coordinator.session().await.unwrap();
    queue.enqueue(Bytes::from("held")).await.unwrap();
    queue.enqueue(Bytes::from("free")).await.unwrap();
    let held = queue.receive(&session).await.unwrap();
    assert_eq!(held.item(), "held");
    // Status tells the held item from the ready one.
    let report = coordinator.status(&name).await.unwrap();
    let status = report.queues.iter().find(|queue| queue.name == name);
    assert_eq!(
        status.map(|queue| (queue.ready, queue.in_flight)),
        Some((1, 1)),
        "{:?}",
        report.queues
    );
    let locks = lock_path(&setup, &name);
    let path = queue_path(&setup, &name);
    let mut java = JavaPeer::start(&setup, "queue-take", &path, &[&locks, "1"]);
    java.said("started").await;
    java.said("item free").await;
    java.said("done").await;
    java.exits().await;
    // The held item is still queued, invisible to len() while held.
    assert_eq!(queue.len().await.unwrap(), 0);
    held.nack().await.unwrap();
    assert_eq!(queue.len().await.unwrap(), 1);
    let mut java = JavaPeer::start(&setup, "queue-take", &path, &[&locks, "1"]);
    java.said("started").await;
    java.said("item held").await;
    java.said("done").await;
    java.exits().await;
    assert!(queue.is_empty().await.unwrap());
    assert!(queue.try_receive(&session).await.unwrap().is_none());
}
