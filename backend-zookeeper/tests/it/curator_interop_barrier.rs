//! distsync's ZooKeeper barrier against Apache Curator's own `DistributedBarrier`,
//! run by the Java peer (interop/curator-peer, built by scripts/curator-peer.sh, its
//! launcher in `DISTSYNC_CURATOR_PEER`) on the same server (`DISTSYNC_ZOOKEEPER_URL`):
//! a barrier held from Rust holds a Java waiter back until Rust releases it, and the
//! reverse.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use common::{observer, setup, unique, JavaPeer, Setup, SETTLE, STEP};
use distsync_core::Name;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_barrier_holds_a_curator_waiter_until_released() {
    let Some(setup) = setup() else { return };
    let name = unique("barrier-rust-holds");
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let barrier = coordinator
        .backend()
        .barrier(Name::new(&name).unwrap())
        .unwrap();
    barrier.hold().await.unwrap();
    let mut java = JavaPeer::start(&setup, "barrier-wait", &node(&setup, &name), &[]);
    java.said("started").await;
    java.stays_silent("the Rust barrier is held").await;
    barrier.release().await.unwrap();
    java.said("passed").await;
    java.exits().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_barrier_holds_a_rust_waiter_until_removed() {
    let Some(setup) = setup() else { return };
    let name = unique("barrier-java-holds");
    let zk = observer(&setup).await;
    let mut set = JavaPeer::start(&setup, "barrier-set", &node(&setup, &name), &[]);
    set.said("set").await;
    set.exits().await;
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let barrier = coordinator
        .backend()
        .barrier(Name::new(&name).unwrap())
        .unwrap();
    let waiter = tokio::spawn(async move { barrier.wait().await });
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "Rust passed Curator's barrier");
    let mut remove = JavaPeer::start(&setup, "barrier-remove", &node(&setup, &name), &[]);
    remove.said("removed").await;
    remove.exits().await;
    timeout(STEP, waiter)
        .await
        .expect("Rust passes once Curator removed the barrier")
        .unwrap()
        .unwrap();
    assert!(
        zk.check_stat(&node(&setup, &name)).await.unwrap().is_none(),
        "the barrier's node is gone"
    );
}

/// The barrier's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    common::node(setup, "barrier", name)
}
