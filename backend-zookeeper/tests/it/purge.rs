//! Counting and purging a name prefix on a real ZooKeeper (`DISTSYNC_ZOOKEEPER_URL`;
//! skipped loudly when unset, a failure under `CI=true`): every node of the names
//! under the prefix is counted and deleted, children first, and a sibling name that
//! merely starts with the same characters is left alone.

use distsync_core::Primitives;
use std::num::NonZeroUsize;
use std::time::Duration;

use distsync_core::{Backend, Name, SessionOptions};

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_node_under_the_prefix_and_nothing_beside_it() {
    let Some(url) = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL") else {
        return;
    };
    let backend = distsync_zookeeper::backend(&url).await.unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("purge-test-{}-{nanos}", std::process::id());
    let sibling = name(&format!("{prefix}x"));
    let prefix = name(&prefix);
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 0, "fresh");

    // lock/<prefix>, lock/<prefix>/a, its contender: 3 nodes.
    let nested = backend
        .locker(&session, name(&format!("{prefix}/a")))
        .unwrap()
        .lock()
        .await
        .unwrap();
    // semaphore/<prefix>, its locks/ and leases/, the lease: 4 nodes.
    let permit = backend
        .semaphore(&session, prefix.clone(), NonZeroUsize::new(2).unwrap())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    // lock/<prefix>x and its contender: outside the prefix.
    let outside = backend
        .locker(&session, sibling.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();

    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 7);
    assert_eq!(backend.count_prefix(&sibling).await.unwrap(), 2);
    assert_eq!(backend.purge_prefix(&prefix).await.unwrap(), 7);
    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 0, "after");
    assert_eq!(backend.count_prefix(&sibling).await.unwrap(), 2, "sibling");
    // The purged holds are gone, and their holders learn it.
    tokio::time::timeout(Duration::from_secs(10), nested.lost())
        .await
        .expect("the purged lock's lost() fires");
    tokio::time::timeout(Duration::from_secs(10), permit.lost())
        .await
        .expect("the purged permit's lost() fires");
    assert!(!outside.is_lost(), "the sibling's lock survives the purge");
    outside.unlock().await.unwrap();
    assert_eq!(backend.purge_prefix(&sibling).await.unwrap(), 1);
    assert_eq!(backend.count_prefix(&sibling).await.unwrap(), 0);
    session.close().await.unwrap();
}
