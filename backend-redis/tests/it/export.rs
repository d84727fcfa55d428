//! `Backend::export` of the Redis backend, and migrations through it, against a real
//! Redis server (`DISTSYNC_REDIS_URL`). Each test uses its own namespace.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_core::migrate::{migrate, MigrateOptions, QueueItem, Snapshot};
use distsync_core::{Coordinator, Error, Isolation, Name};
use distsync_kv::memory::MemoryBackend;
use redis::aio::MultiplexedConnection;
use support::{server_url, unique_namespace, with_namespace};

const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh namespace on the test server, or `None` (said loudly) when unset outside CI.
async fn fresh_store() -> Option<(Coordinator, String)> {
    let namespace = unique_namespace("export");
    let url = with_namespace(&server_url()?, &namespace);
    let backend = distsync_redis::backend(&url).await.unwrap();
    assert_eq!(backend.namespace(), namespace);
    Some((Coordinator::new(backend), namespace))
}

/// A plain connection to the test server, to read and write the store's keys by hand.
async fn raw_connection() -> MultiplexedConnection {
    redis::Client::open(server_url().unwrap())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The in-flight record of the call `cid` in the queue whose key prefix is `p`.
async fn inflight_record(raw: &mut MultiplexedConnection, p: &str, cid: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(format!("{p}:inflight"))
        .arg(cid)
        .query_async(raw)
        .await
        .unwrap()
}

/// Deletes every key of the test's namespace.
async fn clean(namespace: &str) {
    let mut raw = raw_connection().await;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{namespace}*"))
            .query_async(&mut raw)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn item(priority: u16, item: &'static [u8]) -> QueueItem {
    QueueItem {
        priority,
        item: Bytes::from_static(item),
    }
}

async fn export(coordinator: &Coordinator) -> Snapshot {
    coordinator.backend().export().await.unwrap()
}

/// Polls the export (bounded by [`DEADLINE`]) until `holds` live holds show.
async fn wait_for_holds(coordinator: &Coordinator, holds: usize) -> Snapshot {
    let start = Instant::now();
    loop {
        let snapshot = export(coordinator).await;
        if snapshot.active_holds.len() == holds {
            return snapshot;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "expected {holds} holds, still {:?}",
            snapshot.active_holds
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(coordinator: &Coordinator, writes: &[(&'static str, Option<&'static str>)]) {
    let writes = writes.to_vec();
    coordinator
        .stm()
        .unwrap()
        .atomically(Isolation::default(), |tx| {
            let writes = writes.clone();
            async move {
                for (key, value) in writes {
                    match value {
                        Some(value) => tx.put(key, value),
                        None => tx.delete(key),
                    }
                }
                Ok(())
            }
        })
        .await
        .unwrap();
}

async fn drain(coordinator: &Coordinator, queue: &str) -> Vec<Bytes> {
    let queue = coordinator.queue(queue).unwrap();
    let mut items = Vec::new();
    while let Some(item) = queue.try_dequeue().await.unwrap() {
        items.push(item);
    }
    items
}

#[tokio::test(flavor = "multi_thread")]
async fn export_reads_queues_keys_barriers_and_live_holds() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    let jobs = store.queue("jobs").unwrap();
    for (value, priority) in [
        (&b"b1"[..], 1),
        (b"a1", 0),
        (b"b2", 1),
        (b"", u16::MAX),
        (b"a2\xff\x00", 0),
    ] {
        jobs.enqueue_with_priority(Bytes::from_static(value), priority)
            .await
            .unwrap();
    }
    // A name with braces: its keys share a prefix with the STM keys'.
    store
        .queue("stm}:k:odd")
        .unwrap()
        .enqueue("o")
        .await
        .unwrap();
    put(
        &store,
        &[
            ("accounts/a", Some("100")),
            ("gone", Some("x")),
            ("empty", Some("")),
        ],
    )
    .await;
    put(&store, &[("gone", None)]).await;
    store.barrier("gate").unwrap().hold().await.unwrap();
    let lowered = store.barrier("lowered").unwrap();
    lowered.hold().await.unwrap();
    lowered.release().await.unwrap();

    // A consumer that died between its pop and its acknowledgement left a record.
    let mut raw = raw_connection().await;
    let p = format!("{{{namespace}jobs}}:queue");
    let parked = format!("00003{:016x}parked", 99);
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:inflight"))
        .arg("c9.9")
        .arg(&parked)
        .query_async(&mut raw)
        .await
        .unwrap();

    let session = store.session().await.unwrap();
    let guard = store
        .locker(&session, "mutex")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let reader = store
        .rwlock(&session, "config")
        .unwrap()
        .read()
        .await
        .unwrap();
    // A waiter is a live hold too.
    let other = store.session().await.unwrap();
    let waiter = {
        let locker = store.locker(&other, "mutex").unwrap();
        tokio::spawn(async move { locker.lock().await })
    };

    let snapshot = wait_for_holds(&store, 3).await;
    assert_eq!(
        snapshot.queues[&name("jobs")],
        [
            item(0, b"a1"),
            item(0, b"a2\xff\x00"),
            item(1, b"b1"),
            item(1, b"b2"),
            item(3, b"parked"),
            item(u16::MAX, b""),
        ],
        "the parked item is exported at its place"
    );
    assert_eq!(snapshot.queues[&name("stm}:k:odd")], [item(0, b"o")]);
    assert_eq!(snapshot.queues.len(), 2);
    assert_eq!(
        snapshot.stm.iter().collect::<Vec<_>>(),
        [
            (&name("accounts/a"), &Bytes::from("100")),
            (&name("empty"), &Bytes::new()),
        ]
    );
    assert_eq!(snapshot.barriers, [name("gate")]);
    assert!(snapshot.active_holds.contains(&guard.key().to_owned()));
    assert!(snapshot.active_holds.contains(&reader.key().to_owned()));
    for hold in &snapshot.active_holds {
        assert!(hold.starts_with(&format!("{{{namespace}")), "{hold}");
    }
    // The export reads the parked record and leaves it where it is.
    let still = inflight_record(&mut raw, &p, "c9.9").await;
    assert_eq!(still.as_deref(), Some(parked.as_str()));
    assert_eq!(jobs.len().await.unwrap(), 5);

    guard.unlock().await.unwrap();
    let second = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(wait_for_holds(&store, 2).await.active_holds.len(), 2);
    second.unlock().await.unwrap();
    reader.unlock().await.unwrap();
    session.close().await.unwrap();
    other.close().await.unwrap();
    let after = export(&store).await;
    assert!(after.active_holds.is_empty(), "{:?}", after.active_holds);
    assert_eq!(after.queue_items(), 7);
    clean(&namespace).await;
}

/// Dequeuers that died between their claim and its hand-over left claims in flight,
/// one fresh and one already stale: the source puts both items back once stale, so the
/// export lists them as items of the queue, at their places (priority, then arrival,
/// among the queued ones), each once, and leaves the records on the source.
#[tokio::test(flavor = "multi_thread")]
async fn claims_left_in_flight_are_exported_as_items_at_their_places_once() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    let jobs = store.queue("jobs").unwrap();
    for (value, priority) in [(&b"first"[..], 0), (b"second", 0), (b"low", 2)] {
        jobs.enqueue_with_priority(Bytes::from_static(value), priority)
            .await
            .unwrap();
    }
    let p = format!("{{{namespace}jobs}}:queue");
    let mut raw = raw_connection().await;
    // Claim the two heads as the pop script does (the item moves from the item set to
    // a record timed in `:ift`): one just now, one older than the stale bound.
    let now: (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
    let now_ms = now.0 * 1000 + now.1 / 1000;
    let stale_ms = u64::try_from(distsync_core::queue::STALE_CLAIM.as_millis()).unwrap();
    let mut records = Vec::new();
    for (cid, at) in [("c9.1", now_ms), ("c9.2", now_ms - stale_ms - 60_000)] {
        let record = crate::queue::claim_head(&mut raw, &p, cid, at).await;
        records.push((cid, record));
    }
    // Enqueued after the claims, it still comes after them.
    jobs.enqueue("later").await.unwrap();
    assert_eq!(jobs.len().await.unwrap(), 2);

    let snapshot = export(&store).await;
    assert_eq!(
        snapshot.queues[&name("jobs")],
        [
            item(0, b"first"),
            item(0, b"second"),
            item(0, b"later"),
            item(2, b"low"),
        ],
        "every item of the queue, the claimed ones at their places, each once"
    );
    assert_eq!(snapshot.queue_items(), 4);
    assert!(snapshot.active_holds.is_empty(), "{snapshot:?}");
    // The export only reads: the records and the queue are as they were.
    for (cid, record) in &records {
        let still = inflight_record(&mut raw, &p, cid).await;
        assert_eq!(still.as_deref(), Some(record.as_str()), "{cid}");
    }
    assert_eq!(jobs.len().await.unwrap(), 2);
    // Exported again, nothing changes.
    assert_eq!(export(&store).await, snapshot);
    clean(&namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_namespace_exports_nothing() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    assert_eq!(export(&store).await, Snapshot::default());
    clean(&namespace).await;
}

/// Mixed priorities, two queues, keys, a barrier.
async fn fill(source: &Coordinator) {
    let jobs = source.queue("jobs/eu").unwrap();
    for (value, priority) in [("b1", 1), ("a1", 0), ("c1", 9), ("b2", 1), ("a2", 0)] {
        jobs.enqueue_with_priority(value, priority).await.unwrap();
    }
    let mail = source.queue("mail").unwrap();
    for value in ["m1", "m2", "m3"] {
        mail.enqueue(value).await.unwrap();
    }
    put(
        source,
        &[("accounts/a", Some("100")), ("accounts/b", Some("7"))],
    )
    .await;
    source.barrier("gate").unwrap().hold().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_to_redis_and_back_preserves_order_priorities_keys_and_barriers() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    let memory = Coordinator::new(MemoryBackend::new());
    fill(&memory).await;
    let original = export(&memory).await;

    let there = migrate(
        &**memory.backend(),
        &**store.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            there.queues,
            there.queue_items,
            there.stm_keys,
            there.barriers
        ),
        (2, 8, 2, 1)
    );
    assert_eq!(export(&store).await, original);

    let back = Coordinator::new(MemoryBackend::new());
    let report = migrate(
        &**store.backend(),
        &**back.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report, there);
    assert_eq!(export(&back).await, original);
    assert_eq!(
        drain(&back, "jobs/eu").await,
        ["a1", "a2", "b1", "b2", "c1"]
    );
    assert_eq!(drain(&back, "mail").await, ["m1", "m2", "m3"]);
    // The source is left as it was.
    assert_eq!(export(&store).await, original);
    clean(&namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_from_redis_refuses_while_a_lock_is_held_unless_forced() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    fill(&store).await;
    let session = store.session().await.unwrap();
    let guard = store
        .locker(&session, "busy")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let to = Coordinator::new(MemoryBackend::new());
    match migrate(
        &**store.backend(),
        &**to.backend(),
        &MigrateOptions::default(),
    )
    .await
    {
        Err(Error::ActiveHolders { count: 1, example }) => assert_eq!(example, guard.key()),
        other => panic!("expected ActiveHolders, got {other:?}"),
    }
    assert_eq!(export(&to).await, Snapshot::default());

    let forced = MigrateOptions {
        force: true,
        ..MigrateOptions::default()
    };
    let report = migrate(&**store.backend(), &**to.backend(), &forced)
        .await
        .unwrap();
    assert_eq!((report.active_holds, report.queue_items), (1, 8));
    // The hold itself is not copied.
    assert!(export(&to).await.active_holds.is_empty());

    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    let again = Coordinator::new(MemoryBackend::new());
    let report = migrate(
        &**store.backend(),
        &**again.backend(),
        &MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.active_holds, 0);
    clean(&namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_from_redis_refuses_while_an_unfair_lock_is_held_or_awaited() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    let unfair = distsync_core::LockOptions::new().unfair();
    let (holder, waiter) = (
        store.session().await.unwrap(),
        store.session().await.unwrap(),
    );
    let guard = store
        .locker_with(&holder, "busy", unfair)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let to = Coordinator::new(MemoryBackend::new());
    let options = MigrateOptions::default();
    match migrate(&**store.backend(), &**to.backend(), &options).await {
        Err(Error::ActiveHolders { count: 1, example }) => assert_eq!(example, guard.key()),
        other => panic!("expected ActiveHolders, got {other:?}"),
    }
    // A waiter is a live hold too, as a fair waiter's entry is.
    let waiting = store.locker_with(&waiter, "busy", unfair).unwrap();
    let waits = tokio::spawn(async move { waiting.lock().await });
    let snapshot = wait_for_holds(&store, 2).await;
    assert!(
        snapshot.active_holds.contains(&guard.key().to_owned()),
        "{snapshot:?}"
    );
    guard.unlock().await.unwrap();
    waits.await.unwrap().unwrap().unlock().await.unwrap();
    holder.close().await.unwrap();
    waiter.close().await.unwrap();
    let report = migrate(&**store.backend(), &**to.backend(), &options)
        .await
        .unwrap();
    assert_eq!(report.active_holds, 0);
    clean(&namespace).await;
}

/// `status`'s `(ready, in_flight)` of `queue`.
async fn ready_and_in_flight(store: &Coordinator, queue: &str) -> (usize, usize) {
    let report = store.status(queue).await.unwrap();
    let found = report.queues.iter().find(|q| q.name == queue);
    let found = found.unwrap_or_else(|| panic!("no queue {queue} in {report:#?}"));
    (found.ready, found.in_flight)
}

/// The queue `jobs` of the test below, nothing held: `b`, `c` and `z` ready.
async fn assert_settled(store: &Coordinator) {
    let snapshot = wait_for_holds(store, 0).await;
    assert_eq!(
        snapshot.queues[&name("jobs")],
        [item(0, b"b"), item(0, b"c"), item(9, b"z")]
    );
    assert_eq!(ready_and_in_flight(store, "jobs").await, (3, 0));
}

/// Items delivered by `receive` and not yet acknowledged (the queue's held set) are
/// exported at their places and counted by `status` as in flight; their hold is a
/// live hold. Acknowledged, an item is gone from both; a receiver's session that
/// ends puts its item back.
#[tokio::test(flavor = "multi_thread")]
async fn received_items_are_exported_and_counted_until_acknowledged() {
    let Some((store, namespace)) = fresh_store().await else {
        return;
    };
    let jobs = store.queue("jobs").unwrap();
    for (value, priority) in [(&b"a"[..], 0), (b"b", 0), (b"c", 0), (b"z", 9)] {
        jobs.enqueue_with_priority(Bytes::from_static(value), priority)
            .await
            .unwrap();
    }
    let session = store.session().await.unwrap();
    let first = jobs.receive(&session).await.unwrap();
    assert_eq!(first.item().as_ref(), b"a");

    let snapshot = export(&store).await;
    assert_eq!(
        snapshot.queues[&name("jobs")],
        [item(0, b"a"), item(0, b"b"), item(0, b"c"), item(9, b"z")],
        "the received item is exported at its place"
    );
    assert_eq!(snapshot.active_holds.len(), 1, "{snapshot:?}");
    assert!(
        snapshot.active_holds[0].contains("jobs}:queue:e:"),
        "{:?}",
        snapshot.active_holds
    );
    assert_eq!(ready_and_in_flight(&store, "jobs").await, (3, 1));

    // A migration refuses the live hold, and copies the item when forced.
    let destination = Coordinator::new(MemoryBackend::new());
    let refused = migrate(
        &**store.backend(),
        &**destination.backend(),
        &MigrateOptions::default(),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::ActiveHolders { .. })),
        "{refused:?}"
    );
    let forced = MigrateOptions {
        force: true,
        ..MigrateOptions::default()
    };
    migrate(&**store.backend(), &**destination.backend(), &forced)
        .await
        .unwrap();
    assert_eq!(drain(&destination, "jobs").await, ["a", "b", "c", "z"]);

    first.ack().await.unwrap();
    assert_settled(&store).await;

    // Held by a session that closes: back at its place, ready again.
    let second = jobs.receive(&session).await.unwrap();
    assert_eq!(second.item().as_ref(), b"b");
    assert_eq!(ready_and_in_flight(&store, "jobs").await, (2, 1));
    session.close().await.unwrap();
    assert_settled(&store).await;
    drop(second);
    clean(&namespace).await;
}
