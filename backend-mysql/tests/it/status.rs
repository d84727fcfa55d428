//! `Coordinator::status` (who holds what) against a real MySQL or MariaDB server
//! (`DISTSYNC_MYSQL_URL`; skipped loudly when unset), in tables of the test's own,
//! through the checks every backend runs.

use distsync_conformance::{check_counter_status, check_session_expiry, check_status};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_holders_waiters_leaders_queues_and_barriers() {
    let Some((kv, url, coordinator, other)) = two_clients().await else {
        return;
    };
    if let Err(error) = check_status(&coordinator, &other, "app/").await {
        panic!("{error}");
    }
    drop_tables(&kv, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_counters_latches_and_rate_limiters() {
    let Some((kv, url, coordinator, _)) = two_clients().await else {
        return;
    };
    if let Err(error) = check_counter_status(&coordinator, "app/").await {
        panic!("{error}");
    }
    drop_tables(&kv, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_holders_session_time_left() {
    let Some((kv, url, coordinator, _)) = two_clients().await else {
        return;
    };
    match check_session_expiry(&coordinator, "app/").await {
        Ok(left) => assert!(left.is_some(), "MySQL reports a lease's time left"),
        Err(error) => panic!("{error}"),
    }
    drop_tables(&kv, &url).await;
}
