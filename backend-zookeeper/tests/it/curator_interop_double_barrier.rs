//! distsync's ZooKeeper double barrier against Apache Curator's own
//! `DistributedDoubleBarrier`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): Rust and Java participants of one barrier enter
//! together (none before the last has arrived) and leave together (none before the
//! last has left).
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use std::num::NonZeroUsize;
use std::time::Duration;

use common::{observer, setup, unique, JavaPeer, Setup, SETTLE, STEP};
use distsync_core::{DoubleBarrier, Name, Session};
use tokio::time::timeout;
use zookeeper_client as zk;

/// A Rust participant: its own coordinator and session.
async fn rust_side(
    setup: &Setup,
    name: &str,
    count: usize,
) -> (distsync_core::Coordinator, Session, Box<dyn DoubleBarrier>) {
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let barrier = coordinator
        .backend()
        .double_barrier(
            &session,
            Name::new(name).unwrap(),
            NonZeroUsize::new(count).unwrap(),
        )
        .unwrap();
    (coordinator, session, barrier)
}

/// The participants' nodes under `path` (`ready` aside).
async fn participants(zk: &zk::Client, path: &str) -> usize {
    match zk.list_children(path).await {
        Ok(children) => children.iter().filter(|child| *child != "ready").count(),
        Err(zk::Error::NoNode) => 0,
        Err(error) => panic!("listing {path}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_curator_participants_enter_and_leave_together() {
    let Some(setup) = setup() else { return };
    let name = unique("double-barrier");
    let path = node(&setup, &name);
    let zk = observer(&setup).await;
    // Three participants: Curator first, then two from Rust.
    let mut java = JavaPeer::start(&setup, "double-barrier", &path, &["3"]);
    java.said("started").await;
    let deadline = tokio::time::Instant::now() + STEP;
    while participants(&zk, &path).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Curator never entered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_c1, s1, first) = rust_side(&setup, &name, 3).await;
    let (_c2, s2, second) = rust_side(&setup, &name, 3).await;
    let first = std::sync::Arc::<dyn DoubleBarrier>::from(first);
    let entering = {
        let first = first.clone();
        tokio::spawn(async move { first.enter().await })
    };
    java.stays_silent("two of three participants entered").await;
    assert!(!entering.is_finished(), "Rust entered with two of three");
    second.enter().await.unwrap();
    timeout(STEP, entering)
        .await
        .expect("the first Rust participant enters with the third")
        .unwrap()
        .unwrap();
    java.said("entered").await;

    // Leaving: both Rust participants start; neither passes while Curator is inside.
    let leaving = {
        let first = first.clone();
        tokio::spawn(async move { first.leave().await })
    };
    let second = std::sync::Arc::<dyn DoubleBarrier>::from(second);
    let leaving_second = {
        let second = second.clone();
        tokio::spawn(async move { second.leave().await })
    };
    tokio::time::sleep(SETTLE).await;
    assert!(
        !leaving.is_finished() && !leaving_second.is_finished(),
        "a Rust participant left while Curator's was inside"
    );
    java.tell("go").await;
    java.said("left").await;
    java.exits().await;
    for leave in [leaving, leaving_second] {
        timeout(STEP, leave)
            .await
            .expect("the Rust participants leave with Curator's")
            .unwrap()
            .unwrap();
    }
    assert_eq!(participants(&zk, &path).await, 0);
    s1.close().await.unwrap();
    s2.close().await.unwrap();
}

/// The double barrier's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    common::node(setup, "double_barrier", name)
}
