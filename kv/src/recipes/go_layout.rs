//! The recipes in Go's key layout ([`KeyLayout::Go`]) over the memory store: the keys
//! they write are the keys etcd's Go recipes write, items Go's queues put are taken,
//! and names that Go's layout would let meet are refused. (Against Go's own code on a
//! real etcd: the conformance suite's `interop_go_*` cases.)

use distsync_core::Primitives;
use std::time::Duration;

use bytes::Bytes;

use crate::kv::{Kv, Range, Txn, TxnOp};
use crate::memory::{capabilities, MemoryKv};
use distsync_core::error::Error;
use distsync_core::stm::Isolation;

use super::key::KeyLayout;
use super::testing::{name, within};
use super::KvBackend;

fn go_backend() -> KvBackend<MemoryKv> {
    KvBackend::with_kv(MemoryKv::new(), "ns/", capabilities()).with_layout(KeyLayout::Go)
}

/// Every key under the namespace, in key order, with whether it is leased.
async fn keys(backend: &KvBackend<MemoryKv>) -> Vec<(String, bool)> {
    let all = backend.kv().range(Range::prefix("ns/")).await.unwrap();
    all.kvs
        .into_iter()
        .map(|kv| (kv.key, kv.lease != 0))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn queue_items_and_guards_are_gos_priority_queue_keys() {
    let backend = go_backend();
    let queue = backend.queue(name("jobs")).unwrap();
    queue.enqueue(Bytes::from_static(b"a")).await.unwrap();
    queue
        .enqueue_with_priority(Bytes::from_static(b"b"), 3)
        .await
        .unwrap();
    // Enqueues' idempotency records live in distsync's own area, which Go never reads.
    let keys: Vec<String> = keys(&backend)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with("ns//queue/jobs/k/"))
        .collect();
    assert_eq!(
        keys,
        [
            "ns/__jobs/00000",
            "ns/__jobs/00003",
            "ns/jobs/00000/0000000000000000",
            "ns/jobs/00003/0000000000000000",
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn items_of_gos_plain_queue_are_taken_oldest_first() {
    let backend = go_backend();
    let kv = backend.kv();
    // As Go's `recipe.Queue.Enqueue` writes them: `<name>/<unix nanos>`.
    for (nanos, item) in [
        (1_700_000_000_000_000_002_u64, "second"),
        (1_700_000_000_000_000_001, "first"),
    ] {
        let put = Txn::default().and_then(vec![TxnOp::put(
            format!("ns/jobs/{nanos}"),
            Bytes::from(item),
            0,
        )]);
        kv.txn(put).await.unwrap();
    }
    let queue = backend.queue(name("jobs")).unwrap();
    assert_eq!(queue.len().await.unwrap(), 2);
    assert_eq!(within(queue.dequeue()).await.unwrap(), "first");
    assert_eq!(queue.try_dequeue().await.unwrap().unwrap(), "second");
    assert_eq!(queue.try_dequeue().await.unwrap(), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_consumer_wakes_for_an_item_nobody_woke_it_for() {
    let backend = go_backend();
    let queue = backend.queue(name("jobs")).unwrap();
    let waiting = tokio::spawn({
        let queue = backend.queue(name("jobs")).unwrap();
        async move { queue.dequeue().await }
    });
    // Wait until the consumer is in line (its waiter key exists).
    within(async {
        while !keys(&backend)
            .await
            .iter()
            .any(|(k, _)| k.starts_with("ns//queue/jobs/w/"))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A Go producer: a plain put, no wake-up.
    let put = Txn::default().and_then(vec![TxnOp::put(
        "ns/jobs/1700000000000000001",
        Bytes::from("go"),
        0,
    )]);
    backend.kv().txn(put).await.unwrap();
    assert_eq!(within(waiting).await.unwrap().unwrap(), "go");
    assert_eq!(queue.try_dequeue().await.unwrap(), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_queue_leaves_keys_of_other_shapes_alone() {
    let backend = go_backend();
    // A queue nested under the name, and a priority-1 item of `jobs` seen from
    // `jobs/00001`'s side.
    backend
        .queue(name("jobs/x"))
        .unwrap()
        .enqueue("nested")
        .await
        .unwrap();
    backend
        .queue(name("jobs"))
        .unwrap()
        .enqueue_with_priority("p1", 1)
        .await
        .unwrap();
    let jobs = backend.queue(name("jobs")).unwrap();
    assert_eq!(jobs.try_dequeue().await.unwrap().unwrap(), "p1");
    assert_eq!(jobs.try_dequeue().await.unwrap(), None);
    let nested = backend.queue(name("jobs/x")).unwrap();
    assert_eq!(nested.try_dequeue().await.unwrap().unwrap(), "nested");
}

#[tokio::test(flavor = "current_thread")]
async fn rwlock_barrier_double_barrier_and_stm_keys_are_gos() {
    let backend = go_backend();
    let session = super::testing::session(&backend).await;
    let rwlock = backend.rwlock(&session, name("rw")).unwrap();
    let read = rwlock.read().await.unwrap();
    backend.barrier(name("gate")).unwrap().hold().await.unwrap();
    let stm = backend.stm().unwrap();
    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        tx.put("acct/a", "100");
        Ok(())
    })
    .await
    .unwrap();
    let double = backend
        .double_barrier(&session, name("dbl"), std::num::NonZeroUsize::MIN)
        .unwrap();
    within(double.enter()).await.unwrap();
    let keys = keys(&backend).await;
    let shape = |key: &str| {
        key.rsplit_once('/')
            .filter(|(_, last)| last.len() == 19 && last.bytes().all(|b| b.is_ascii_digit()))
            .map_or(key.to_owned(), |(parent, _)| format!("{parent}/<nanos>"))
    };
    let shapes: Vec<(String, bool)> = keys.iter().map(|(k, leased)| (shape(k), *leased)).collect();
    for expected in [
        ("ns/rw/read/<nanos>".to_owned(), true),
        ("ns/gate".to_owned(), false),
        ("ns/acct/a".to_owned(), false),
        ("ns/dbl/waiters/<nanos>".to_owned(), true),
        ("ns/dbl/ready".to_owned(), false),
    ] {
        assert!(shapes.contains(&expected), "{expected:?} not in {shapes:?}");
    }
    read.unlock().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn names_go_s_layout_would_let_meet_are_refused() {
    let backend = go_backend();
    let session = super::testing::session(&backend).await;
    for refused in [
        "q/00001",
        "q/read",
        "q/ready",
        "x/0000000000000003",
        "x/1700000000000000001",
    ] {
        assert!(
            matches!(backend.queue(name(refused)), Err(Error::InvalidName { .. })),
            "queue {refused}"
        );
        assert!(matches!(
            backend.barrier(name(refused)),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            backend.rwlock(&session, name(refused)),
            Err(Error::InvalidName { .. })
        ));
    }
    let stm = backend.stm().unwrap();
    let refused = stm
        .atomically(Isolation::SerializableSnapshot, |tx| async move {
            tx.get("acct/write").await.map(drop)
        })
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidName { .. })),
        "{refused:?}"
    );
    // Other names, and every name in the injective layout, are taken.
    assert!(backend.queue(name("q/1")).is_ok());
    assert!(backend.queue(name("jobs/2024")).is_ok());
    let injective = KvBackend::with_kv(MemoryKv::new(), "", capabilities());
    assert!(injective.queue(name("q/00001")).is_ok());
}
