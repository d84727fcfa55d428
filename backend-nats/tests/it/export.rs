//! `Backend::export` of the NATS backend and migrations through it, against a real
//! nats-server: each test on a bucket of its own (an export reads the whole bucket),
//! deleted at its end.

use std::time::Duration;

use bytes::Bytes;
use distsync_core::migrate::{migrate, LatchState, MigrateOptions, QueueItem, Snapshot};
use distsync_core::{Coordinator, Error, Isolation, Name};

/// The most a hold's release may take to show in an export.
const DEADLINE: Duration = Duration::from_secs(10);

/// A bucket of the test's own: its coordinator and the raw JetStream context that
/// deletes it ([`delete`]).
struct Bucket {
    coordinator: Coordinator,
    jetstream: async_nats::jetstream::Context,
    name: String,
}

impl Bucket {
    /// A new bucket, or `None` (said loudly) when the server's URL is unset.
    async fn new(what: &str) -> Option<Self> {
        let name = crate::common::unique_name(what).as_str().to_owned();
        let url = crate::common::url(&name)?;
        let coordinator = distsync::connect(&url).await.expect("connecting");
        let server = url.split_once("/?").map_or(url.as_str(), |(s, _)| s);
        let client = async_nats::connect(server).await.expect("a raw client");
        Some(Self {
            coordinator,
            jetstream: async_nats::jetstream::new(client),
            name,
        })
    }

    async fn export(&self) -> Snapshot {
        self.coordinator.backend().export().await.expect("export")
    }

    /// Writes `value` to `key` of the bucket, as another writer than distsync would.
    async fn put_raw(&self, key: &str, value: &'static [u8]) {
        self.jetstream
            .publish(
                format!("$KV.{}.{key}", self.name),
                Bytes::from_static(value),
            )
            .await
            .expect("publishing")
            .await
            .expect("stored");
    }

    /// Deletes the bucket.
    async fn delete(self) {
        drop(self.coordinator);
        self.jetstream
            .delete_stream(format!("KV_{}", self.name))
            .await
            .expect("deleting the bucket");
    }
}

fn name(name: &str) -> Name {
    Name::new(name).expect("a name")
}

fn item(priority: u16, item: &'static [u8]) -> QueueItem {
    QueueItem {
        priority,
        item: Bytes::from_static(item),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_every_kind_and_lists_live_holds() {
    let Some(bucket) = Bucket::new("it-export").await else {
        return;
    };
    let store = &bucket.coordinator;
    // A name with what a subject token cannot hold: its keys are escaped.
    let jobs = store.queue("jobs/a.b c").expect("a queue");
    for (value, priority) in [
        (&b"b1"[..], 1),
        (b"a1", 0),
        (b"gone", 0),
        (b"b2", 1),
        (b"", u16::MAX),
        (b"a2\xff\x00", 0),
    ] {
        jobs.enqueue_with_priority(Bytes::from_static(value), priority)
            .await
            .expect("enqueueing");
    }
    // One taken for good; one received and not acknowledged, which stays the queue's
    // at its place while its hold is live.
    assert_eq!(jobs.dequeue().await.expect("a dequeue"), "a1");
    let receiver = store.session().await.expect("a session");
    let delivery = jobs.receive(&receiver).await.expect("a receive");
    assert_eq!(delivery.item().as_ref(), b"gone");
    // An acknowledged item is gone.
    let acked = store.queue("acked").expect("a queue");
    acked.enqueue("done").await.expect("enqueueing");
    acked
        .receive(&receiver)
        .await
        .expect("a receive")
        .ack()
        .await
        .expect("an ack");
    // An in-flight record no claim wrote (it names no item key), which no put-back
    // restores, is not exported.
    bucket.put_raw("queue.acked.=.c.dead", b"lost").await;

    store
        .stm()
        .expect("stm")
        .atomically(Isolation::default(), |tx| async move {
            tx.put("config/a", "1");
            tx.put("config/b.c", "2");
            tx.put("config/deleted", "3");
            Ok(())
        })
        .await
        .expect("a transaction");
    store
        .stm()
        .expect("stm")
        .atomically(Isolation::default(), |tx| async move {
            tx.delete("config/deleted");
            Ok(())
        })
        .await
        .expect("a transaction");
    store
        .barrier("gate")
        .expect("a barrier")
        .hold()
        .await
        .expect("held");
    let released = store.barrier("opened").expect("a barrier");
    released.hold().await.expect("held");
    released.release().await.expect("released");
    store
        .counter("visits")
        .expect("a counter")
        .add(-7)
        .await
        .expect("added");
    store
        .latch("ready", 3)
        .expect("a latch")
        .count_down()
        .await
        .expect("counted");

    let holder = store.session().await.expect("a session");
    let guard = store
        .locker(&holder, "jobs/nightly")
        .expect("a lock")
        .lock()
        .await
        .expect("locked");
    let leadership = store
        .election(&holder, "leader")
        .expect("an election")
        .campaign("me")
        .await
        .expect("leader");

    let snapshot = bucket.export().await;
    assert_eq!(
        snapshot.queues.get(&name("jobs/a.b c")),
        Some(&vec![
            item(0, b"gone"),
            item(0, b"a2\xff\x00"),
            item(1, b"b1"),
            item(1, b"b2"),
            item(u16::MAX, b""),
        ]),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.queues.len(), 1, "{snapshot:?}");
    assert_eq!(
        snapshot.stm.into_iter().collect::<Vec<_>>(),
        [
            (name("config/a"), Bytes::from_static(b"1")),
            (name("config/b.c"), Bytes::from_static(b"2")),
        ]
    );
    assert_eq!(snapshot.barriers, [name("gate")]);
    assert_eq!(
        snapshot.counters.into_iter().collect::<Vec<_>>(),
        [(name("visits"), -7)]
    );
    assert_eq!(
        snapshot.latches.into_iter().collect::<Vec<_>>(),
        [(
            name("ready"),
            LatchState {
                initial: 3,
                remaining: 2
            }
        )]
    );
    // The receiver's hold, the lock's holder and the election's leader.
    assert_eq!(
        snapshot.active_holds.len(),
        3,
        "{:?}",
        snapshot.active_holds
    );
    for key in [guard.key(), leadership.key()] {
        assert!(
            snapshot
                .active_holds
                .iter()
                .any(|hold| hold.as_str() == key),
            "{key} not in {:?}",
            snapshot.active_holds
        );
    }

    // Live holds refuse a migration; released, it copies.
    let memory = Coordinator::new(distsync::store::memory::MemoryBackend::new());
    let refused = migrate(
        &**store.backend(),
        &**memory.backend(),
        &MigrateOptions::default(),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::ActiveHolders { count: 3, .. })),
        "{refused:?}"
    );
    guard.unlock().await.expect("unlocked");
    leadership.resign().await.expect("resigned");
    delivery.nack().await.expect("a nack");
    holder.close().await.expect("closed");
    receiver.close().await.expect("closed");
    let start = tokio::time::Instant::now();
    while !bucket.export().await.active_holds.is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "holds still listed after release"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = migrate(
        &**store.backend(),
        &**memory.backend(),
        &MigrateOptions::default(),
    )
    .await
    .expect("a migration");
    assert_eq!(
        (
            report.queue_items,
            report.stm_keys,
            report.barriers,
            report.counters,
            report.latches
        ),
        (5, 2, 1, 1, 1)
    );
    assert_eq!(
        memory
            .queue("jobs/a.b c")
            .expect("a queue")
            .dequeue()
            .await
            .expect("an item"),
        "gone"
    );
    bucket.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_into_the_bucket_verifies_and_a_key_of_another_writer_is_an_error() {
    let Some(bucket) = Bucket::new("it-export-into").await else {
        return;
    };
    let memory = Coordinator::new(distsync::store::memory::MemoryBackend::new());
    let queue = memory.queue("work").expect("a queue");
    for n in 0..10u16 {
        queue
            .enqueue_with_priority(n.to_string(), n % 3)
            .await
            .expect("enqueueing");
    }
    memory
        .counter("c")
        .expect("a counter")
        .add(5)
        .await
        .expect("added");
    memory
        .latch("l", 2)
        .expect("a latch")
        .count_down()
        .await
        .expect("counted");
    memory
        .barrier("b")
        .expect("a barrier")
        .hold()
        .await
        .expect("held");
    let report = migrate(
        &**memory.backend(),
        &**bucket.coordinator.backend(),
        &MigrateOptions::default(),
    )
    .await
    .expect("a verified migration into the bucket");
    assert_eq!(
        (report.queue_items, report.counters, report.latches),
        (10, 1, 1)
    );
    assert_eq!(
        bucket.export().await,
        memory
            .backend()
            .export()
            .await
            .expect("the source's export")
    );

    // A counter key that does not hold a number is a typed error, not a zero.
    bucket.put_raw("counter.broken.=", b"twelve").await;
    match bucket.coordinator.backend().export().await {
        Err(Error::Backend { .. }) => {}
        other => panic!("a malformed counter was exported: {other:?}"),
    }
    bucket.delete().await;
}
