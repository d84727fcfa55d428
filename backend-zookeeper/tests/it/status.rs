//! `Coordinator::status` (who holds what) against a real ZooKeeper
//! (`DISTSYNC_ZOOKEEPER_URL`; skipped loudly when unset, a failure under `CI=true`),
//! under a fresh prefix, through the checks every backend runs.

use distsync_conformance::{check_counter_status, check_session_expiry, check_status};
use distsync_core::Coordinator;

/// Two clients of the same servers, and a prefix no other run uses.
async fn clients() -> Option<(Coordinator, Coordinator, String)> {
    let url = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some((
        distsync::connect(&url).await.unwrap(),
        distsync::connect(&url).await.unwrap(),
        format!("status-test-{}-{nanos}/", std::process::id()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_holders_waiters_leaders_queues_and_barriers() {
    let Some((coordinator, other, prefix)) = clients().await else {
        return;
    };
    if let Err(error) = check_status(&coordinator, &other, &prefix).await {
        panic!("{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_counters_latches_and_rate_limiters() {
    let Some((coordinator, _, prefix)) = clients().await else {
        return;
    };
    if let Err(error) = check_counter_status(&coordinator, &prefix).await {
        panic!("{error}");
    }
}

/// A holder's session time left is not reported: only the server knows a session's
/// timeout and last heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_does_not_report_a_sessions_time_left() {
    let Some((coordinator, _, prefix)) = clients().await else {
        return;
    };
    assert_eq!(check_session_expiry(&coordinator, &prefix).await, Ok(None));
}
