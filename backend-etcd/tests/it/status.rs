//! `Coordinator::status` (who holds what) against the etcd server named by
//! `DISTSYNC_ETCD_URL` (skipped loudly when unset; a failure under `CI=true`), under a
//! fresh name prefix per run.

use distsync_conformance::{check_counter_status, check_session_expiry, check_status, server_url};
use distsync_core::Coordinator;

/// A name prefix no other run uses.
fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("etcdtest/status/{}-{nanos}/", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_holders_waiters_leaders_queues_and_barriers() {
    let Some(url) = server_url("DISTSYNC_ETCD_URL") else {
        return;
    };
    let coordinator: Coordinator = distsync::connect(&url).await.unwrap();
    let other: Coordinator = distsync::connect(&url).await.unwrap();
    let prefix = fresh_prefix();
    if let Err(error) = check_status(&coordinator, &other, &prefix).await {
        panic!("{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_counters_latches_and_rate_limiters() {
    let Some(url) = server_url("DISTSYNC_ETCD_URL") else {
        return;
    };
    let coordinator: Coordinator = distsync::connect(&url).await.unwrap();
    let prefix = fresh_prefix();
    if let Err(error) = check_counter_status(&coordinator, &prefix).await {
        panic!("{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_holders_session_time_left() {
    let Some(url) = server_url("DISTSYNC_ETCD_URL") else {
        return;
    };
    let coordinator: Coordinator = distsync::connect(&url).await.unwrap();
    let prefix = fresh_prefix();
    match check_session_expiry(&coordinator, &prefix).await {
        Ok(left) => assert!(left.is_some(), "etcd reports a lease's time left"),
        Err(error) => panic!("{error}"),
    }
}
