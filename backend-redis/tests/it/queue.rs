//! The Redis queue against a real Redis server (`DISTSYNC_REDIS_URL`), beyond the
//! conformance suite: an enqueue wakes one waiting consumer, the longest waiting; an
//! at-most-once claim left in flight by a dead consumer is put back after
//! `STALE_CLAIM`, and not before.
//!
//! Each test uses its own namespace, so tests run in parallel on one server.

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::queue::STALE_CLAIM;
use distsync_core::Name;
use support::{server_url, unique_namespace, with_namespace};
use tokio::time::Instant;

struct Fixture {
    server: String,
    namespace: String,
    backend: distsync_redis::RedisBackend,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let server = server_url()?;
        let namespace = unique_namespace("qtest");
        let url = with_namespace(&server, &namespace);
        let backend = distsync_redis::backend(&url).await.unwrap();
        Some(Self {
            server,
            namespace,
            backend,
        })
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The key prefix of queue `name` (a plain name needs no escaping).
    fn prefix(&self, name: &str) -> String {
        format!("{{{}{name}}}:queue", self.namespace)
    }

    /// The waiting consumers' call ids, longest waiting first.
    async fn waiters(&self, name: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(format!("{}:waiters", self.prefix(name)))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.raw().await)
            .await
            .unwrap()
    }

    /// Polls until `n` consumers wait on `name`, failing after 10 s.
    async fn wait_for_waiters(&self, name: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self.waiters(name).await;
            if waiting.len() == n {
                return waiting;
            }
            assert!(
                Instant::now() < deadline,
                "{} waiters, not {n}, after 10 s",
                waiting.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

macro_rules! fixture {
    () => {
        match Fixture::new().await {
            Some(fixture) => fixture,
            None => return,
        }
    };
}

async fn within<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("a woken consumer took longer than 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_waiting_consumer_is_woken_per_item_in_arrival_order() {
    let f = fixture!();
    let name = Name::new("wq").unwrap();
    let mut consumers = Vec::new();
    for n in 0..3 {
        let queue = f.backend.queue(name.clone()).unwrap();
        consumers.push(tokio::spawn(async move { queue.dequeue().await }));
        f.wait_for_waiters("wq", n + 1).await;
    }
    let waiting = f.waiters("wq").await;
    let producer = f.backend.queue(name.clone()).unwrap();
    for (n, item) in ["x", "y", "z"].into_iter().enumerate() {
        producer.enqueue(item).await.unwrap();
        // The enqueue's script took its waiter out of the line: the others keep their
        // places (neither woken nor lined up again).
        assert_eq!(
            f.waiters("wq").await,
            waiting[n + 1..],
            "after enqueueing {item}, only the longest-waiting consumer is woken"
        );
        let consumer = consumers.remove(0);
        assert_eq!(within(consumer).await.unwrap(), item);
        assert!(
            consumers.iter().all(|c| !c.is_finished()),
            "a consumer not woken returned"
        );
    }
    assert!(f.waiters("wq").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_put_back_and_a_recent_one_is_not() {
    let f = fixture!();
    let name = Name::new("sq").unwrap();
    let queue = f.backend.queue(name.clone()).unwrap();
    queue.enqueue("dead").await.unwrap();
    queue.enqueue("busy").await.unwrap();
    let p = f.prefix("sq");
    let mut raw = f.raw().await;
    // Two consumers claimed an item each and never came back (their processes died
    // between the claim and the acknowledgement): one 16 minutes ago, one just now.
    let now: (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
    let now_ms = now.0 * 1000 + now.1 / 1000;
    let stale_ms = u64::try_from(STALE_CLAIM.as_millis()).unwrap();
    for (cid, at) in [
        ("dead-consumer", now_ms - stale_ms - 60_000),
        ("busy-consumer", now_ms),
    ] {
        claim_head(&mut raw, &p, cid, at).await;
    }
    assert_eq!(queue.len().await.unwrap(), 0);
    assert_eq!(
        queue.try_dequeue().await.unwrap().as_deref(),
        Some(&b"dead"[..]),
        "the claim older than STALE_CLAIM is put back and delivered"
    );
    assert_eq!(
        queue.try_dequeue().await.unwrap(),
        None,
        "a recent claim stays in flight"
    );
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{p}:inflight"))
        .query_async(&mut raw)
        .await
        .unwrap();
    // (The records of this test's own dequeues are acknowledged in the background.)
    assert!(left.iter().any(|cid| cid == "busy-consumer"), "{left:?}");
    assert!(!left.iter().any(|cid| cid == "dead-consumer"), "{left:?}");
}

/// Claims the head of the queue whose key prefix is `p` as the pop script does, for
/// call `cid` at `at_ms` on the server's clock: the item moves from the item set to an
/// in-flight record, timed in `:ift`. The claim of a dequeuer that never came back.
/// Returns the record.
pub(crate) async fn claim_head(
    raw: &mut redis::aio::MultiplexedConnection,
    p: &str,
    cid: &str,
    at_ms: u64,
) -> String {
    let popped: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
        .arg(format!("{p}:items"))
        .query_async(raw)
        .await
        .unwrap();
    let (member, score) = &popped[0];
    let record = format!("{:05}{member}", *score as u64);
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:inflight"))
        .arg(cid)
        .arg(&record)
        .query_async(raw)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{p}:ift"))
        .arg(at_ms)
        .arg(cid)
        .query_async(raw)
        .await
        .unwrap();
    record
}
