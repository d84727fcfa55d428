//! Behaviour across a restart of the server (without persistence), on a private
//! `redis-server` on a free port (the conformance suite's,
//! `distsync_conformance::faults::private`). The suite's restart cases check what
//! every backend must do; this checks exactly what Redis does: every session and
//! hold is gone, and fencing tokens start again from 1.
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use std::time::Duration;

use distsync_conformance::faults::private;
use distsync_conformance::{connector, StoreKind};
use distsync_core::Error;

fn servers_available() -> bool {
    if std::env::var("DISTSYNC_REDIS_URL").is_ok_and(|url| !url.is_empty()) {
        if let Err(reason) = private::available(StoreKind::Redis) {
            panic!("the Redis test server is set but no private one can be started: {reason}");
        }
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "DISTSYNC_REDIS_URL is not set and CI=true: the Redis test server is required"
    );
    eprintln!(
        "\n*** SKIPPED: DISTSYNC_REDIS_URL is not set; start one with scripts/servers.sh up ***\n"
    );
    false
}

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_ends_sessions_and_waiters_recover() {
    if !servers_available() {
        return;
    }
    let connect = connector(|url| async move { distsync_redis::backend(&url).await });
    let mut server = private::start(StoreKind::Redis, connect).await.unwrap();
    let coordinator = distsync_redis::connect(server.url()).await.unwrap();

    let holder = coordinator
        .session_with_ttl(Duration::from_millis(600))
        .await
        .unwrap();
    let guard = coordinator
        .locker(&holder, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter_session = coordinator
        .session_with_ttl(Duration::from_millis(600))
        .await
        .unwrap();
    let waiter = coordinator.locker(&waiter_session, "l").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await.map(|g| g.token()) });
    let consumer = coordinator.queue("q").unwrap();
    let consuming = tokio::spawn(async move { consumer.dequeue().await });
    let barrier = coordinator.barrier("b").unwrap();
    barrier.hold().await.unwrap();
    let passing = {
        let barrier = coordinator.barrier("b").unwrap();
        tokio::spawn(async move { barrier.wait().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.stop().await.unwrap();
    server.start().await.unwrap();

    // Everything in memory is gone: the sessions learn it at their next renewal.
    within(Duration::from_secs(10), holder.lost()).await;
    assert!(guard.is_lost());
    assert!(matches!(guard.unlock().await, Err(Error::SessionLost)));
    assert!(matches!(
        within(Duration::from_secs(10), waiting).await.unwrap(),
        Err(Error::SessionLost)
    ));
    // The barrier's hold is gone too: its waiter re-reads after the reconnection.
    within(Duration::from_secs(10), passing)
        .await
        .unwrap()
        .unwrap();
    // A blocked consumer is woken by an item enqueued after the restart.
    coordinator
        .queue("q")
        .unwrap()
        .enqueue("after".into())
        .await
        .unwrap();
    assert_eq!(
        within(Duration::from_secs(10), consuming)
            .await
            .unwrap()
            .unwrap(),
        "after"
    );
    // New sessions work; fencing tokens start again from the beginning.
    let session = coordinator.session().await.unwrap();
    let again = coordinator
        .locker(&session, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(again.token().get(), 1);
    again.unlock().await.unwrap();
    session.close().await.unwrap();
}
