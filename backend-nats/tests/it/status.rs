//! `Coordinator::status` (who holds what) against a real nats-server
//! (`DISTSYNC_NATS_URL`; skipped loudly when unset, a failure under `CI=true`), on a
//! bucket of its own, under a fresh name prefix per run: the checks every backend
//! runs, and a queue's ready and in-flight items through receives, a `nack`, an ended
//! session, an `ack` and a `dequeue`.

use std::time::Duration;

use distsync_conformance::{check_counter_status, check_session_expiry, check_status};
use distsync_core::status::{QueueStatus, StatusReport};
use distsync_core::Coordinator;

/// The bucket of these tests.
const BUCKET: &str = "it-status";
/// The most a change takes to show in the report (a background purge, a revoke).
const WITHIN: Duration = Duration::from_secs(10);

/// Two clients of the server (as two processes would be), and a prefix no other run
/// uses.
async fn clients() -> Option<(Coordinator, Coordinator, String)> {
    let url = crate::common::url(BUCKET)?;
    let prefix = format!("{}/", crate::common::unique_name("status"));
    Some((
        distsync::connect(&url).await.unwrap(),
        distsync::connect(&url).await.unwrap(),
        prefix,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_holders_session_time_left() {
    let Some((coordinator, _, prefix)) = clients().await else {
        return;
    };
    match check_session_expiry(&coordinator, &prefix).await {
        Ok(left) => assert!(left.is_some(), "NATS reports a contender key's time left"),
        Err(error) => panic!("{error}"),
    }
}

/// The queues of the report under `prefix`.
async fn queues(coordinator: &Coordinator, prefix: &str) -> Vec<QueueStatus> {
    let report: StatusReport = coordinator.status(prefix).await.unwrap();
    report.queues
}

/// Polls the report under `prefix` until its queues are `expected`.
async fn until_queues(coordinator: &Coordinator, prefix: &str, expected: &[QueueStatus]) {
    crate::common::until(WITHIN, &format!("queues {expected:?}"), || async {
        queues(coordinator, prefix).await == expected
    })
    .await;
}

/// A queue of three items, one received: two ready, one in flight, as `len` counts
/// the ready ones. A `nack` or the end of the receiver's session makes it ready
/// again; an `ack` removes it; a `dequeue` removes its item once its call has it. The
/// name holds characters a key escapes, and shows as the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_a_received_item_in_flight_and_the_others_ready() {
    let Some((coordinator, other, prefix)) = clients().await else {
        return;
    };
    let name = format!("{prefix}jobs.a b=");
    let queue = coordinator.queue(&name).unwrap();
    for item in ["a", "b", "c"] {
        queue.enqueue(item).await.unwrap();
    }
    // A queue of another prefix, which begins like this one's name.
    let beside = format!("{prefix}job");
    coordinator
        .queue(&beside)
        .unwrap()
        .enqueue("x")
        .await
        .unwrap();
    let name_prefix = format!("{prefix}jobs");
    let counts = |ready, in_flight| [QueueStatus::new(name.clone(), ready, in_flight)];
    assert_eq!(queues(&coordinator, &name_prefix).await, counts(3, 0));

    let session = coordinator.session().await.unwrap();
    let delivery = queue.receive(&session).await.unwrap();
    assert_eq!(delivery.item().as_ref(), b"a");
    assert_eq!(queues(&coordinator, &name_prefix).await, counts(2, 1));
    assert_eq!(queue.len().await.unwrap(), 2);
    delivery.nack().await.unwrap();
    assert_eq!(queues(&coordinator, &name_prefix).await, counts(3, 0));

    // Held by a session another client ends: ready again once the store ended it.
    let delivery = queue.receive(&session).await.unwrap();
    assert_eq!(queues(&coordinator, &name_prefix).await, counts(2, 1));
    other.backend().revoke_session(session.id()).await.unwrap();
    until_queues(&coordinator, &name_prefix, &counts(3, 0)).await;
    drop(delivery);
    let _ = session.close().await;

    let session = coordinator.session().await.unwrap();
    let delivery = queue.receive(&session).await.unwrap();
    assert_eq!(delivery.item().as_ref(), b"a");
    delivery.ack().await.unwrap();
    assert_eq!(queues(&coordinator, &name_prefix).await, counts(2, 0));
    assert_eq!(queue.dequeue().await.unwrap().as_ref(), b"b");
    until_queues(&coordinator, &name_prefix, &counts(1, 0)).await;

    // The whole prefix: both queues, by name.
    assert_eq!(
        queues(&coordinator, &prefix).await,
        [
            QueueStatus::new(beside.clone(), 1, 0),
            QueueStatus::new(name.clone(), 1, 0)
        ]
    );
    assert_eq!(
        queue.try_dequeue().await.unwrap().as_deref(),
        Some(&b"c"[..])
    );
    let beside = coordinator.queue(&beside).unwrap();
    assert_eq!(
        beside.try_dequeue().await.unwrap().as_deref(),
        Some(&b"x"[..])
    );
    until_queues(&coordinator, &prefix, &[]).await;
    session.close().await.unwrap();
}
