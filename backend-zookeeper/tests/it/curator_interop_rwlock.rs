//! distsync's ZooKeeper read-write lock against Apache Curator's own
//! `InterProcessReadWriteLock`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): a Java writer keeps Rust readers and writers out, Rust
//! and Java readers share the lock while a Java writer waits for both, and a Java
//! reader keeps a Rust writer out.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use common::{observer, setup, unique, until_children, JavaPeer, Setup, STEP};
use distsync_core::{Coordinator, RwLock, Session};
use tokio::time::timeout;

/// A Rust contender: its own coordinator and session.
async fn rust_side(setup: &Setup, name: &str) -> (Coordinator, Session, Box<dyn RwLock>) {
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let lock = coordinator
        .backend()
        .rwlock(&session, distsync_core::Name::new(name).unwrap())
        .unwrap();
    (coordinator, session, lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_writer_keeps_rust_readers_and_writers_out() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-java-writes");
    let zk = observer(&setup).await;
    let mut java = java_holder(&setup, "write", &name, -1).await;
    let java_token = java.granted().await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "read beside Curator's writer"
    );
    assert!(
        lock.try_write().await.unwrap().is_none(),
        "write beside Curator's writer"
    );
    let reader = {
        let (coordinator, session, lock) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard = lock.read().await.unwrap();
            (guard, session, coordinator)
        })
    };
    until_children(&zk, &node(&setup, &name), 2).await;
    assert!(!reader.is_finished(), "Rust read while Curator writes");
    java.release().await;
    java.released().await;
    let (guard, reader_session, _reader_coordinator) = timeout(STEP, reader)
        .await
        .expect("the Rust reader granted after Curator's writer released")
        .unwrap();
    guard.unlock().await.unwrap();
    let write = lock.write().await.unwrap();
    assert!(write.token().get() > java_token);
    write.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 0).await;
    reader_session.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_curator_readers_share_while_a_curator_writer_waits_for_both() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-shared");
    let zk = observer(&setup).await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    let read = lock.read().await.unwrap();
    // Curator's reader is granted beside the Rust reader.
    let mut java_reader = java_holder(&setup, "read", &name, -1).await;
    java_reader.said("granted").await;
    let mut java_writer = java_holder(&setup, "write", &name, 0).await;
    until_children(&zk, &node(&setup, &name), 3).await;
    // A waiting writer holds back later readers, Rust's too.
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "a Rust reader passed Curator's waiting writer"
    );
    read.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 2).await;
    assert_eq!(
        java_writer.has_spoken(),
        None,
        "Curator's writer granted while Curator's reader holds"
    );
    java_reader.release().await;
    java_reader.released().await;
    let _token = java_writer.granted().await;
    java_writer.released().await;
    until_children(&zk, &node(&setup, &name), 0).await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_reader_keeps_a_rust_writer_out_until_it_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-java-reads");
    let zk = observer(&setup).await;
    let mut java = java_holder(&setup, "read", &name, -1).await;
    java.said("granted").await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    let writer = {
        let (coordinator, session, lock) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard = lock.write().await.unwrap();
            (guard, session, coordinator)
        })
    };
    until_children(&zk, &node(&setup, &name), 2).await;
    assert!(!writer.is_finished(), "Rust wrote while Curator reads");
    java.release().await;
    java.released().await;
    let (guard, writer_session, _writer_coordinator) = timeout(STEP, writer)
        .await
        .expect("the Rust writer granted after Curator's reader released")
        .unwrap();
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "read beside Rust's writer"
    );
    guard.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 0).await;
    writer_session.close().await.unwrap();
    session.close().await.unwrap();
}

/// The read-write lock's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    common::node(setup, "rwlock", name)
}

/// A Curator `InterProcessReadWriteLock` reader or writer (`read|write SERVERS PATH
/// HOLD_MS`), started.
async fn java_holder(setup: &Setup, mode: &str, name: &str, hold_ms: i64) -> JavaPeer {
    JavaPeer::holder(setup, mode, &node(setup, name), &[], hold_ms).await
}
