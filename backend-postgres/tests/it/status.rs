//! `Coordinator::status` (who holds what) against the PostgreSQL server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`),
//! under a fresh name prefix per run.

use distsync_conformance::{check_counter_status, check_session_expiry, check_status, server_url};
use distsync_core::Coordinator;

/// A name prefix no other run uses: the process and the time.
fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pgtest/status/{}-{nanos}/", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_holders_waiters_leaders_queues_and_barriers() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
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
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let coordinator: Coordinator = distsync::connect(&url).await.unwrap();
    let prefix = fresh_prefix();
    if let Err(error) = check_counter_status(&coordinator, &prefix).await {
        panic!("{error}");
    }
}

/// A holder's session time left is reported: its session row's deadline less the
/// server's clock.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_holders_session_time_left() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let coordinator: Coordinator = distsync::connect(&url).await.unwrap();
    let left = check_session_expiry(&coordinator, &fresh_prefix())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(left.is_some(), "no session time left reported");
}
