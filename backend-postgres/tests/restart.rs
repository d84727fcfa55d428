//! Behaviour across a server restart, on a private PostgreSQL cluster (the conformance
//! suite's, `distsync_conformance::faults::private`). The suite's restart cases check
//! that durable state survives and that sessions end; this checks what is particular to
//! this backend: waits on durable state (a blocked `dequeue`, a barrier `wait`) ride
//! out the restart and resume, and the fencing counter survives it.
//!
//! Runs when `DISTSYNC_POSTGRES_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use std::time::Duration;

use distsync_conformance::faults::private;
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Error, Name, SessionOptions};

async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_ends_sessions_while_durable_waits_resume() {
    if server_url("DISTSYNC_POSTGRES_URL").is_none() {
        return;
    }
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    let mut server = private::start(StoreKind::Postgres, connect).await.unwrap();
    let backend = distsync_postgres::backend(server.url()).await.unwrap();
    let name = |s: &str| Name::new(s).unwrap();

    let ttl = Duration::from_secs(1);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, name("mutex"))
        .unwrap()
        .lock()
        .await
        .unwrap();
    let barrier = backend.barrier(name("gate")).unwrap();
    barrier.hold().await.unwrap();
    let consumer = {
        let queue = backend.queue(name("later")).unwrap();
        tokio::spawn(async move { queue.dequeue().await })
    };
    let passer = {
        let gate = backend.barrier(name("gate")).unwrap();
        tokio::spawn(async move { gate.wait().await })
    };

    server.stop().await.unwrap();
    server.start().await.unwrap();

    // The session did not survive: its connections died.
    within(ttl * 3, "the session's lost()", session.lost()).await;
    assert!(guard.is_lost());
    let stale_token = guard.token();
    assert!(matches!(guard.unlock().await, Err(Error::SessionLost)));

    // Waits on durable state rode out the restart.
    backend
        .queue(name("later"))
        .unwrap()
        .enqueue("after".into())
        .await
        .unwrap();
    let item = within(Duration::from_secs(10), "the blocked dequeue", consumer)
        .await
        .unwrap();
    assert_eq!(item.unwrap(), "after");
    assert!(
        !passer.is_finished(),
        "wait() passed a barrier that is still held"
    );
    barrier.release().await.unwrap();
    within(Duration::from_secs(10), "the barrier wait", passer)
        .await
        .unwrap()
        .unwrap();

    // The lock is free again, and its fencing counter survived.
    let again = backend.session(SessionOptions::default()).await.unwrap();
    let next = backend
        .locker(&again, name("mutex"))
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    let next = next.expect("the lock of a lost session is free after the restart");
    assert!(next.token() > stale_token);
    next.unlock().await.unwrap();
    again.close().await.unwrap();
}
