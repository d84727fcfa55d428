//! Cooperative revocation between distsync's ZooKeeper lock and Apache Curator's own
//! `InterProcessMutex.makeRevocable` and `Revoker.attemptRevoke`, run by the Java
//! peer (interop/curator-peer): a Java `Revoker` asks a Rust holder to let go, and a
//! Rust `request_release` asks a Java holder made revocable; in both directions the
//! waiter on the other side is then granted with a higher token.
//!
//! Skipped loudly when `DISTSYNC_ZOOKEEPER_URL` or `DISTSYNC_CURATOR_PEER` is unset
//! (`scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use common::{setup, unique, JavaPeer, STEP};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_revoker_asks_a_rust_holder_to_release() {
    let Some(setup) = setup() else { return };
    let name = unique("revoke-rust-holder");
    let path = common::node(&setup, "lock", &name);
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, &name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let requested = guard.release_requested();
    assert!(!guard.is_release_requested(), "asked before anyone asked");

    let mut java_waiter = JavaPeer::holder(&setup, "lock", &path, &[], 0).await;
    java_waiter.stays_silent("the Rust holder holds").await;

    let mut revoker = JavaPeer::start(&setup, "revoke", &path, &[]);
    assert_eq!(
        revoker.next_line().await,
        format!("revoked {}", guard.key())
    );
    revoker.exits().await;

    timeout(STEP, requested)
        .await
        .expect("the Rust holder saw Curator's request")
        .unwrap();
    let token = guard.token().get();
    guard.unlock().await.unwrap();
    let java_token = java_waiter.granted().await;
    assert!(
        java_token > token,
        "Curator's czxid {java_token} not above {token}"
    );
    java_waiter.released().await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_request_asks_a_revocable_curator_holder_to_release() {
    let Some(setup) = setup() else { return };
    let name = unique("revoke-java-holder");
    let path = common::node(&setup, "lock", &name);
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    assert!(
        coordinator.request_release(&name).await.unwrap().is_none(),
        "a request with no holder names none"
    );

    let mut java = JavaPeer::start(&setup, "lock-revocable", &path, &[]);
    java.said("started").await;
    let java_token = java.granted().await;

    let session = coordinator.session().await.unwrap();
    let locker = coordinator.locker(&session, &name).unwrap();
    let waiter = tokio::spawn(async move { locker.lock().await });

    let asked = coordinator
        .request_release(&name)
        .await
        .unwrap()
        .expect("Curator's holder is asked");
    assert_eq!(asked.token.map(|token| token.get()), Some(java_token));
    assert!(
        asked.key.starts_with(&path),
        "asked {} outside {path}",
        asked.key
    );

    java.said("revoke-requested").await;
    java.released().await;
    let guard = timeout(STEP, waiter)
        .await
        .expect("granted once Curator released")
        .unwrap()
        .unwrap();
    assert!(guard.token().get() > java_token);
    // The request was for Curator's hold: the next holder is not asked.
    assert!(!guard.is_release_requested());
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}
