//! The whole conformance suite against a real etcd (`DISTSYNC_ETCD_URL`; skipped
//! loudly when unset, a failure under `CI=true`), with the fault hooks of a server
//! (`distsync_conformance::ServerFaults`): holders in child processes (this test
//! binary re-run as `conformance_child`), `etcdctl lease revoke`, a private etcd to
//! restart, and the three-member cluster of `DISTSYNC_ETCD_CLUSTER_URL` whose leader
//! is stopped with `scripts/servers.sh`.
//!
//! A `harness = false` target: `conformance_tests!` writes its `main`, with one test
//! per case and the extra tests named there (plain functions, not `#[test]`s).
//!
//! Then what etcd gives beyond the suite's contract: a killed holder's lock stays
//! taken until its lease expires, and a revoke is idempotent.

use std::time::Duration;

use distsync_conformance::{connector, run_with, server_url, Harness, HoldKind, Hook};
use tokio::time::Instant;

async fn etcd() -> Option<Harness> {
    let url = server_url("DISTSYNC_ETCD_URL")?;
    let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to etcd at {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(
    etcd,
    a_killed_holders_lock_stays_taken_until_its_lease_expires,
    a_store_side_revoke_is_seen_and_can_be_repeated,
);

/// A killed holder's lease lives on until its TTL runs out (etcd checks expiry about
/// every half second): the lock comes free between about 2/3 of the TTL (the holder
/// renewed at most TTL/3 before the kill) and the TTL plus a second or two, not
/// before, and the next grant's token is higher.
fn a_killed_holders_lock_stays_taken_until_its_lease_expires() {
    run_with(etcd, |harness| async move {
        if let Err(reason) = harness.offers(Hook::ChildHolder) {
            panic!("no child-process holder: {reason}");
        }
        let harness = harness.for_case("killed-holder-lease");
        let ttl = harness.holder_ttl();
        let mut holder = harness.spawn_holder(HoldKind::Lock, "lock").await.unwrap();
        let session = harness.session().await.unwrap();
        let locker = harness
            .backend()
            .locker(&session, harness.name("lock").unwrap())
            .unwrap();
        assert!(
            locker.try_lock().await.unwrap().is_none(),
            "the child holds"
        );
        let killed = Instant::now();
        holder.kill().await.unwrap();
        let guard = tokio::time::timeout(ttl * 5, locker.lock())
            .await
            .expect("the lock to come free")
            .unwrap();
        let waited = killed.elapsed();
        assert!(
            waited >= ttl / 2,
            "granted {waited:?} after the kill, before the holder's lease could expire"
        );
        assert!(
            waited <= ttl + Duration::from_secs(2),
            "granted only {waited:?} after the kill (TTL {ttl:?})"
        );
        assert!(guard.token() > holder.token());
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    });
}

/// The store-side revoke is seen by the session's owner, and revoking an already
/// revoked lease is not an error.
fn a_store_side_revoke_is_seen_and_can_be_repeated() {
    run_with(etcd, |harness| async move {
        let session = harness.fault_session().await.unwrap();
        harness.end_session(&session).await.unwrap();
        tokio::time::timeout(harness.fault_ttl() * 2, session.lost())
            .await
            .expect("lost() after a store-side revoke");
        harness
            .backend()
            .revoke_session(session.id())
            .await
            .unwrap();
    });
}
