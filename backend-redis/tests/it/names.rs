//! Names that must never meet in one key: braces, `/`, `:`, `%` and non-ASCII
//! in names, and primitives of different kinds named alike, against a real Redis
//! (`DISTSYNC_REDIS_URL`; skipped loudly when unset, a failure under `CI=true`). The
//! property test over random names is `keys::tests` in the crate.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use distsync_core::{Coordinator, Isolation};
use support::{server_url, unique_namespace, with_namespace};

async fn coordinator() -> Option<Coordinator> {
    let url = with_namespace(&server_url()?, &unique_namespace("test-names"));
    Some(distsync::connect(&url).await.unwrap())
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("did not finish in time")
}

#[tokio::test]
async fn a_lock_and_an_stm_key_never_share_a_key() {
    let Some(c) = coordinator().await else {
        return;
    };
    let session = c
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    // Before names were escaped, the line of the lock `stm}:k:x` (a sorted set) was
    // the STM key `x}:lock:q` (a hash): WRONGTYPE on both sides.
    let guard = c
        .locker(&session, "stm}:k:x")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let stm = c.stm().unwrap();
    let before = within(
        stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
            let before = tx.get("x}:lock:q").await?;
            tx.put("x}:lock:q", "stm value");
            tx.put("x}:lock", "another");
            Ok(before)
        }),
    )
    .await
    .unwrap();
    assert_eq!(before, None);
    let read = within(stm.atomically(Isolation::Serializable, |tx| async move {
        tx.get("x}:lock:q").await
    }))
    .await
    .unwrap();
    assert_eq!(read, Some(Bytes::from_static(b"stm value")));
    // The lock is untouched: a second locker waits, the holder still holds.
    let other = c
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    assert!(c
        .locker(&other, "stm}:k:x")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    assert!(!guard.is_lost());
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test]
async fn names_that_escape_alike_without_care_are_distinct_locks() {
    let Some(c) = coordinator().await else {
        return;
    };
    let session = c
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    // `}` escapes to `%7D`; `%` itself is escaped, so the name `é%7D` stays apart.
    let mut guards = Vec::new();
    for name in ["é}", "é%7D", "é%257D", "é{", "é", "é}:lock", "é/x:y"] {
        let guard = c.locker(&session, name).unwrap().try_lock().await.unwrap();
        assert!(guard.is_some(), "{name} was taken by another name's holder");
        guards.push(guard);
    }
    session.close().await.unwrap();
}

#[tokio::test]
async fn primitives_named_alike_and_nested_queues_do_not_interfere() {
    let Some(c) = coordinator().await else {
        return;
    };
    let session = c
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    let lock = c.locker(&session, "a").unwrap().lock().await.unwrap();
    let barrier = c.barrier("a").unwrap();
    barrier.hold().await.unwrap();
    let queues = ["a", "a/b", "a}:queue", "a/00001/x", "{a}"];
    for (i, name) in queues.iter().enumerate() {
        let queue = c.queue(name).unwrap();
        queue.enqueue(format!("item {i}")).await.unwrap();
        queue
            .enqueue_with_priority(format!("low {i}"), 1)
            .await
            .unwrap();
    }
    let stm = c.stm().unwrap();
    within(
        stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
            tx.put("a", "stm a");
            Ok(())
        }),
    )
    .await
    .unwrap();
    for (i, name) in queues.iter().enumerate() {
        let queue = c.queue(name).unwrap();
        assert_eq!(queue.len().await.unwrap(), 2, "{name}");
        assert_eq!(
            within(queue.dequeue()).await.unwrap(),
            format!("item {i}"),
            "{name}"
        );
        assert_eq!(
            within(queue.dequeue()).await.unwrap(),
            format!("low {i}"),
            "{name}"
        );
        assert_eq!(queue.try_dequeue().await.unwrap(), None, "{name}");
    }
    assert!(!lock.is_lost());
    barrier.release().await.unwrap();
    within(c.barrier("a").unwrap().wait()).await.unwrap();
    lock.unlock().await.unwrap();
    session.close().await.unwrap();
}
