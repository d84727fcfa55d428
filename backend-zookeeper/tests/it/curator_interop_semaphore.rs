//! distsync's ZooKeeper semaphore against Apache Curator's own
//! `InterProcessSemaphoreV2`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): Rust and Java holders share one limit, Java holders keep
//! a Rust waiter out until one returns its lease, and Rust holders keep a Java waiter
//! out until one releases its permit.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use std::num::NonZeroUsize;

use common::{observer, setup, unique, until_children, JavaPeer, Setup, STEP};
use distsync_core::{Coordinator, Semaphore, Session};
use tokio::time::timeout;

const MAX: NonZeroUsize = NonZeroUsize::new(2).unwrap();

/// A Rust contender: its own coordinator and session.
async fn rust_side(setup: &Setup, name: &str) -> (Coordinator, Session, Box<dyn Semaphore>) {
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let semaphore = coordinator
        .backend()
        .semaphore(&session, distsync_core::Name::new(name).unwrap(), MAX)
        .unwrap();
    (coordinator, session, semaphore)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_holders_share_the_limit_and_keep_a_rust_waiter_out() {
    let Some(setup) = setup() else { return };
    let name = unique("semaphore-java-holds");
    let leases = format!("{}/leases", node(&setup, &name));
    let zk = observer(&setup).await;
    let mut java_first = java_holder(&setup, &name, -1).await;
    let first_token = granted_lease(&mut java_first).await;
    // Shared: a Rust holder takes the second of the two leases.
    let (_coordinator, session, semaphore) = rust_side(&setup, &name).await;
    let rust_permit = timeout(STEP, semaphore.acquire())
        .await
        .expect("the second lease beside Curator's")
        .unwrap();
    assert!(rust_permit.token().get() > first_token);
    // Full: a third, from either side, waits.
    assert!(
        semaphore.try_acquire().await.unwrap().is_none(),
        "Rust's try_acquire while Curator and Rust hold both leases"
    );
    let mut java_third = java_holder(&setup, &name, -1).await;
    // Curator's waiter holds the mutex and has created its lease: 3 leases of 2.
    until_children(&zk, &leases, 3).await;
    let rust_fourth = {
        let (coordinator, session, semaphore) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let permit = semaphore.acquire().await.unwrap();
            (permit, session, coordinator)
        })
    };
    // Queued behind Curator's waiter on the mutex.
    until_children(&zk, &format!("{}/locks", node(&setup, &name)), 2).await;
    assert_eq!(
        java_third.has_spoken(),
        None,
        "Curator granted over the limit"
    );
    assert!(!rust_fourth.is_finished(), "Rust granted over the limit");

    // Curator returns its lease: the waiter at the head of the line (Curator) gets it,
    // the Rust waiter still waits.
    java_first.release().await;
    java_first.released().await;
    let third_token = granted_lease(&mut java_third).await;
    assert!(third_token > rust_permit.token().get());
    until_children(&zk, &leases, 3).await;
    assert!(!rust_fourth.is_finished(), "Rust granted out of turn");

    // Rust releases its permit: the Rust waiter gets it, above Curator's token.
    rust_permit.release().await.unwrap();
    let (fourth, fourth_session, _fourth_coordinator) = timeout(STEP, rust_fourth)
        .await
        .expect("the Rust waiter granted after a release")
        .unwrap();
    assert!(fourth.token().get() > third_token);
    java_third.release().await;
    java_third.released().await;
    fourth.release().await.unwrap();
    until_children(&zk, &leases, 0).await;
    fourth_session.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_holders_keep_a_curator_waiter_out_until_one_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("semaphore-rust-holds");
    let leases = format!("{}/leases", node(&setup, &name));
    let zk = observer(&setup).await;
    let (_first_coordinator, first_session, first) = rust_side(&setup, &name).await;
    let (_second_coordinator, second_session, second) = rust_side(&setup, &name).await;
    let p1 = first.acquire().await.unwrap();
    let p2 = second.acquire().await.unwrap();
    let mut java = java_holder(&setup, &name, 0).await;
    until_children(&zk, &leases, 3).await;
    assert_eq!(
        java.has_spoken(),
        None,
        "Curator was granted while Rust holds both permits"
    );
    let highest = p1.token().max(p2.token()).get();
    p1.release().await.unwrap();
    let java_token = granted_lease(&mut java).await;
    assert!(
        java_token > highest,
        "Curator's czxid {java_token} not above {highest}"
    );
    java.released().await;
    // Curator's lease is gone: a Rust acquirer gets the freed permit at once.
    let again = timeout(STEP, first.try_acquire())
        .await
        .expect("try_acquire answers")
        .unwrap()
        .expect("a permit is free after Curator returned its lease");
    again.release().await.unwrap();
    p2.release().await.unwrap();
    until_children(&zk, &leases, 0).await;
    first_session.close().await.unwrap();
    second_session.close().await.unwrap();
}

/// The semaphore's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    common::node(setup, "semaphore", name)
}

/// A Curator `InterProcessSemaphoreV2` holder of one lease (`semaphore SERVERS PATH MAX
/// HOLD_MS`), started.
async fn java_holder(setup: &Setup, name: &str, hold_ms: i64) -> JavaPeer {
    let max = MAX.to_string();
    JavaPeer::holder(setup, "semaphore", &node(setup, name), &[&max], hold_ms).await
}

/// Waits for `granted <lease node> <czxid>`, checks that the lease is a protected
/// `lease-` node as Curator names it, and returns the czxid.
async fn granted_lease(java: &mut JavaPeer) -> u64 {
    let line = java.next_line().await;
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["granted", lease, czxid] = words[..] else {
        panic!("unexpected line {line:?}");
    };
    assert!(
        lease.starts_with("_c_") && lease.contains("-lease-"),
        "Curator's lease {lease:?} is not a protected `lease-` node"
    );
    czxid.parse().expect("a czxid")
}
