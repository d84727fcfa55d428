//! distsync's ZooKeeper lock against Apache Curator's own `InterProcessMutex`, run by
//! the Java peer (interop/curator-peer, built by scripts/curator-peer.sh, its launcher
//! in `DISTSYNC_CURATOR_PEER`) on the same server (`DISTSYNC_ZOOKEEPER_URL`): a Java
//! holder keeps a Rust waiter out until it releases, and the reverse, and mixed Rust
//! and Java waiters are served in the order they queued.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use crate::common;

use std::time::Duration;

use common::{setup, unique, JavaPeer, Setup, STEP};
use distsync_core::{Coordinator, LockGuard, Locker, Session};
use tokio::time::timeout;

async fn rust_side(
    setup: &Setup,
    name: &str,
) -> (Coordinator, Session, std::sync::Arc<dyn Locker>) {
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let locker = coordinator.locker(&session, name).unwrap();
    (coordinator, session, locker)
}

/// Waits, with a deadline, until `locker` counts `count` contenders.
async fn until_contenders(locker: &dyn Locker, count: usize) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = locker.contenders().await.unwrap();
        if now == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} contenders, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_holder_keeps_a_rust_waiter_out_until_it_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("java-holds");
    let mut java = java_holder(&setup, &name, -1).await;
    let java_token = java.granted().await;
    let (_coordinator, session, locker) = rust_side(&setup, &name).await;
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "Rust's try_lock while Curator holds"
    );
    let waiter = {
        let locker = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard: LockGuard = locker.2.lock().await.unwrap();
            (guard, locker.1, locker.0)
        })
    };
    until_contenders(locker.as_ref(), 2).await;
    assert!(
        !waiter.is_finished(),
        "Rust was granted while Curator holds"
    );
    java.release().await;
    java.released().await;
    let (guard, waiter_session, _waiter_coordinator) = timeout(STEP, waiter)
        .await
        .expect("granted after Curator released")
        .unwrap();
    assert!(
        guard.token().get() > java_token,
        "token {} not above Curator's czxid {java_token}",
        guard.token().get()
    );
    guard.unlock().await.unwrap();
    waiter_session.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_holder_keeps_a_curator_waiter_out_until_it_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("rust-holds");
    let (_coordinator, session, locker) = rust_side(&setup, &name).await;
    let guard = locker.lock().await.unwrap();
    let mut java = java_holder(&setup, &name, 0).await;
    until_contenders(locker.as_ref(), 2).await;
    assert_eq!(
        java.has_spoken(),
        None,
        "Curator said something while Rust holds"
    );
    let rust_token = guard.token().get();
    guard.unlock().await.unwrap();
    let java_token = java.granted().await;
    assert!(
        java_token > rust_token,
        "Curator's czxid {java_token} not above {rust_token}"
    );
    java.released().await;
    assert_eq!(locker.contenders().await.unwrap(), 0);
    session.close().await.unwrap();
}

/// `unlock()` deletes the node inline; a caller that gives up on it after its first
/// poll (the delete sent, its answer not yet in) does not stop the delete: the Curator
/// waiter behind is granted while the Rust session lives on (a node left behind would
/// hold the lock until it ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_unlock_given_up_at_once_still_lets_a_curator_waiter_in() {
    let Some(setup) = setup() else { return };
    let name = unique("unlock-given-up");
    let (_coordinator, session, locker) = rust_side(&setup, &name).await;
    let guard = locker.lock().await.unwrap();
    let rust_token = guard.token().get();
    let mut java = java_holder(&setup, &name, 0).await;
    until_contenders(locker.as_ref(), 2).await;
    use std::future::Future as _;
    let mut unlock = Box::pin(guard.unlock());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(unlock.as_mut().poll(cx))).await;
    // The delete leaves when it is called; a thread descheduled between the call and the
    // poll (a loaded runner) may find its answer in already: then the unlock is done,
    // and the Curator waiter must get in all the same.
    if let std::task::Poll::Ready(done) = first {
        done.expect("the unlock, answered by its first poll");
    }
    drop(unlock);
    let java_token = timeout(STEP, java.granted())
        .await
        .expect("Curator granted after a given-up unlock, with the Rust session alive");
    assert!(java_token > rust_token);
    assert!(
        !session.is_lost(),
        "the Rust session ended: the grant proves nothing"
    );
    java.released().await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_waiters_are_served_in_the_order_they_queued() {
    let Some(setup) = setup() else { return };
    let name = unique("mixed");
    let (_coordinator, session, locker) = rust_side(&setup, &name).await;
    let first = locker.lock().await.unwrap();
    // Queued second: Curator, which holds until told to release.
    let mut java_second = java_holder(&setup, &name, -1).await;
    until_contenders(locker.as_ref(), 2).await;
    // Queued third: Rust.
    let rust_third = {
        let (coordinator, session, locker) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard = locker.lock().await.unwrap();
            (guard, session, coordinator)
        })
    };
    until_contenders(locker.as_ref(), 3).await;
    // Queued fourth: Curator again, releasing at once.
    let mut java_fourth = java_holder(&setup, &name, 0).await;
    until_contenders(locker.as_ref(), 4).await;

    first.unlock().await.unwrap();
    let second_token = java_second.granted().await;
    assert!(
        !rust_third.is_finished(),
        "the third was granted before the second released"
    );
    assert_eq!(
        java_fourth.has_spoken(),
        None,
        "the fourth was granted out of turn"
    );
    java_second.release().await;
    java_second.released().await;
    let (third, third_session, _third_coordinator) = timeout(STEP, rust_third)
        .await
        .expect("the third granted after the second")
        .unwrap();
    assert!(third.token().get() > second_token);
    assert_eq!(
        java_fourth.has_spoken(),
        None,
        "the fourth was granted while the third holds"
    );
    let third_token = third.token().get();
    third.unlock().await.unwrap();
    let fourth_token = java_fourth.granted().await;
    assert!(fourth_token > third_token);
    java_fourth.released().await;
    third_session.close().await.unwrap();
    session.close().await.unwrap();
}

/// A Curator holder frozen with SIGSTOP stops its session's pings: ZooKeeper expires
/// the session after the peer's 10 s session timeout, deletes its node, and the Rust
/// waiter is granted then, not before the timeout has mostly run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_curator_holder_loses_the_lock_when_its_session_expires() {
    let Some(setup) = setup() else { return };
    let name = unique("frozen");
    let mut java = java_holder(&setup, &name, -1).await;
    let java_token = java.granted().await;
    let pid = java.child().id().expect("the peer runs");
    let (_coordinator, session, locker) = rust_side(&setup, &name).await;
    let frozen = tokio::time::Instant::now();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success(), "SIGSTOP the peer");
    let guard = timeout(Duration::from_secs(30), locker.lock())
        .await
        .expect("granted once the frozen holder's session expired")
        .unwrap();
    let waited = frozen.elapsed();
    // The peer's session timeout is 10 s; its last ping may have gone out up to a
    // third of it before the freeze.
    assert!(
        waited >= Duration::from_secs(6),
        "granted {waited:?} after freezing the holder, before its session could expire"
    );
    assert!(guard.token().get() > java_token);
    guard.unlock().await.unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    session.close().await.unwrap();
}

/// A Curator `InterProcessMutex` holder (`lock SERVERS PATH HOLD_MS`), started.
async fn java_holder(setup: &Setup, name: &str, hold_ms: i64) -> JavaPeer {
    JavaPeer::holder(
        setup,
        "lock",
        &common::node(setup, "lock", name),
        &[],
        hold_ms,
    )
    .await
}
