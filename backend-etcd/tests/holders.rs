//! Holders outside this process that die or stall (`DISTSYNC_ETCD_URL`): the lock
//! comes free when their lease runs out, not before, and the next grant's fencing
//! token is higher. The holder is the conformance fault hook's: `etcdctl lock` in a
//! child process, killed with SIGKILL or paused with SIGSTOP.

mod common;

use std::time::Duration;

use distsync_core::Error;
use tokio::time::Instant;

use common::{etcdctl, faults, within};

const TTL: Duration = Duration::from_secs(2);

/// What happens to the external holder.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
}

async fn holder_fault_frees_the_lock_after_its_ttl(fault: Fault) {
    let Some(harness) = faults::harness().await else {
        return;
    };
    if !etcdctl::available() {
        return;
    }
    let harness = harness.for_case(&format!("holders-{fault:?}").to_lowercase());
    let name = harness.name("lock").unwrap();
    let mut holder = harness
        .faults()
        .spawn_lock_holder(&**harness.backend(), &name, TTL)
        .await
        .unwrap();

    let session = harness.session().await.unwrap();
    let locker = harness.backend().locker(&session, name).unwrap();
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "the child holds the lock"
    );

    let started = Instant::now();
    match fault {
        Fault::Kill => holder.kill().await.unwrap(),
        Fault::Pause => holder.pause().await.unwrap(),
    }
    let guard = within(TTL * 5, "the lock to come free", locker.lock())
        .await
        .unwrap();
    let waited = started.elapsed();
    // The child's lease was renewed at most TTL/3 before the fault, and etcd checks
    // expiry every half second: the lock comes free between ~2/3 TTL and TTL + 1 s
    // after the fault (plus scheduling).
    assert!(
        waited >= TTL / 2,
        "{fault:?}: granted after {waited:?}, before the holder's lease could expire"
    );
    assert!(
        waited <= TTL + Duration::from_secs(2),
        "{fault:?}: granted only after {waited:?}"
    );
    assert!(
        guard.token() > holder.token(),
        "the next grant's token is higher"
    );
    eprintln!("{fault:?}: lock free {waited:?} after the fault (TTL {TTL:?})");

    if let Fault::Pause = fault {
        // The holder wakes up to a lost lease; distsync still holds the lock.
        holder.resume().await.unwrap();
        assert!(!guard.is_lost());
    }
    guard.unlock().await.unwrap();
    match session.close().await {
        Ok(()) | Err(Error::SessionLost) => {}
        Err(error) => panic!("closing: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_frees_the_lock_after_its_ttl() {
    holder_fault_frees_the_lock_after_its_ttl(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_loses_the_lock_after_its_ttl() {
    holder_fault_frees_the_lock_after_its_ttl(Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_side_revoke_is_seen_and_can_be_repeated() {
    let Some(harness) = faults::harness().await else {
        return;
    };
    let session = harness.fault_session().await.unwrap();
    harness.end_session(&session).await.unwrap();
    within(TTL * 2, "lost() after a store-side revoke", session.lost()).await;
    // Revoking an already revoked lease is not an error.
    harness
        .backend()
        .revoke_session(session.id())
        .await
        .unwrap();
}
