//! `Coordinator::status` (who holds what) against a real Redis (`DISTSYNC_REDIS_URL`;
//! skipped loudly when unset, a failure under `CI=true`), each run in its own
//! namespace.

use crate::support;

use distsync_conformance::{check_counter_status, check_session_expiry, check_status};
use distsync_core::status::LineKind;
use distsync_core::{Coordinator, Isolation};
use support::{server_url, unique_namespace, with_namespace};

async fn clients() -> Option<(Coordinator, Coordinator)> {
    let url = with_namespace(&server_url()?, &unique_namespace("status"));
    Some((
        distsync::connect(&url).await.unwrap(),
        distsync::connect(&url).await.unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_holders_waiters_leaders_queues_and_barriers() {
    let Some((coordinator, other)) = clients().await else {
        return;
    };
    if let Err(error) = check_status(&coordinator, &other, "app/").await {
        panic!("{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_counters_latches_and_rate_limiters() {
    let Some((coordinator, _)) = clients().await else {
        return;
    };
    if let Err(error) = check_counter_status(&coordinator, "app/").await {
        panic!("{error}");
    }
}

/// A holder's session time left is reported: the `PTTL` of its session key, read by
/// the status script beside the entries.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_holders_session_time_left() {
    let Some(server) = server_url() else {
        return;
    };
    let url = with_namespace(&server, &unique_namespace("status"));
    let coordinator = distsync::connect(&url).await.unwrap();
    let left = check_session_expiry(&coordinator, "app/")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(left.is_some(), "no session time left reported");
}

/// An STM key may hold `}` and `:` in its name; one shaped like a lock's waiter line
/// (`{<ns>stm}:k:x}:lock:q`) is not taken for a lock.
#[tokio::test(flavor = "multi_thread")]
async fn stm_keys_shaped_like_lines_are_not_reported() {
    let Some((coordinator, _)) = clients().await else {
        return;
    };
    let stm = coordinator.stm().unwrap();
    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        tx.put("x}:lock:q", "v");
        tx.put("y}:barrier", "v");
        Ok(())
    })
    .await
    .unwrap();
    let report = coordinator.status("").await.unwrap();
    assert!(report.is_empty(), "{report:#?}");
    assert!(report.line(LineKind::Lock, "stm").is_none());
}
