//! Background releases that finish: a guard dropped while the server is unreachable is
//! released once the server is back, however long that takes (the retry policy over
//! an hour of failures is tested in core's `raw::clean_up`), on a private
//! `redis-server` with an append-only file, so that the held lock survives its restart.
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use crate::support;

use std::time::Duration;

use distsync_core::{Coordinator, Session};
use support::PrivateRedis;

fn servers_available() -> bool {
    support::server_url().is_some()
}

/// Opens a session, riding out a server that is still coming back.
async fn session(coordinator: &Coordinator, ttl: Duration) -> Session {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match coordinator
            .session_with(distsync_core::SessionOptions::with_ttl(ttl))
            .await
        {
            Ok(session) => return session,
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("opening a session: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_while_the_server_is_down_is_released_when_it_is_back() {
    if !servers_available() {
        return;
    }
    let mut server = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let coordinator = distsync::connect(&server.url("")).await.unwrap();
    // A TTL far longer than the test: only the release can free the lock in time.
    let ttl = Duration::from_secs(120);
    let holder = session(&coordinator, ttl).await;
    let guard = coordinator
        .locker(&holder, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();

    server.stop();
    // The release fails (connection refused) and is retried in the background.
    drop(guard);
    // The outage lasts a while: several attempts fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.run();

    let other = distsync::connect(&server.url("")).await.unwrap();
    let waiter = session(&other, ttl).await;
    let granted = tokio::time::timeout(
        Duration::from_secs(20),
        other.locker(&waiter, "l").unwrap().lock(),
    )
    .await
    .expect("the dropped guard was not released after the server came back")
    .unwrap();
    // Released by the retried release, not by the end of the holder's session.
    assert!(!holder.is_lost());
    granted.unlock().await.unwrap();
    waiter.close().await.unwrap();
    holder.close().await.unwrap();
}
