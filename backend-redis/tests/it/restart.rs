//! Behaviour across a restart of the server (without persistence), on a private
//! `redis-server` on a free port (the conformance suite's,
//! `distsync_conformance::faults::private`). The suite's restart cases check what
//! every backend must do; this checks exactly what Redis does without the lock-delay
//! (`max_session_ttl=off`, which the default would turn on here): every session and
//! hold is gone, every session opened before the restart reports `lost()`, session
//! ids drawn after it never repeat one from before, and fencing tokens keep growing.
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use crate::support;

use std::time::Duration;

use distsync_conformance::faults::private;
use distsync_conformance::{connector, StoreKind};
use distsync_core::{Error, SessionId};
use support::RENEWED_TTL;

fn servers_available() -> bool {
    if support::server_url().is_none() {
        return false;
    }
    if let Err(reason) = private::available(StoreKind::Redis) {
        panic!("the Redis test server is set but no private one can be started: {reason}");
    }
    true
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
    // What Redis itself does across a restart: without the lock-delay.
    let url = format!("{}?max_session_ttl=off", server.url());
    let coordinator = distsync::connect(&url).await.unwrap();

    let holder = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(RENEWED_TTL))
        .await
        .unwrap();
    let guard = coordinator
        .locker(&holder, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let token_before = guard.token();
    let waiter_session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(RENEWED_TTL))
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
        .enqueue("after")
        .await
        .unwrap();
    assert_eq!(
        within(Duration::from_secs(10), consuming)
            .await
            .unwrap()
            .unwrap(),
        "after"
    );
    // New sessions work; fencing tokens keep growing (the counter, lost with the
    // restart, is seeded again from the server's clock).
    let session = coordinator.session().await.unwrap();
    let again = coordinator
        .locker(&session, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(
        again.token() > token_before,
        "token {} after the restart is not above {} from before",
        again.token().get(),
        token_before.get()
    );
    again.unlock().await.unwrap();
    session.close().await.unwrap();
}

/// The session key of `id` under the default namespace (the layout of
/// `backend-redis/src/keys.rs`).
fn session_key(id: SessionId) -> String {
    format!("{{{}session:{}}}", distsync_redis::DEFAULT_NAMESPACE, id.0)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_before_a_restart_report_lost_and_their_ids_never_come_back() {
    if !servers_available() {
        return;
    }
    let connect = connector(|url| async move { distsync_redis::backend(&url).await });
    let mut server = private::start(StoreKind::Redis, connect).await.unwrap();
    // What Redis itself does across a restart: without the lock-delay.
    let url = format!("{}?max_session_ttl=off", server.url());
    let coordinator = distsync::connect(&url).await.unwrap();

    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(
            coordinator
                .session_with(distsync_core::SessionOptions::with_ttl(RENEWED_TTL))
                .await
                .unwrap(),
        );
    }
    let guard = coordinator
        .locker(&before[0], "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let token_before = guard.token();

    server.stop().await.unwrap();
    server.start().await.unwrap();

    // Sessions opened after the restart (some while the old ones still renew): none
    // gets an id from before, which a server counter restarting at 1 would hand out.
    // The first command after the restart may meet the broken connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut after = Vec::new();
    while after.len() < 200 {
        match coordinator
            .session_with(distsync_core::SessionOptions::with_ttl(
                Duration::from_secs(5),
            ))
            .await
        {
            Ok(session) => after.push(session),
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("opening a session after the restart: {error}"),
        }
    }
    for session in &after {
        assert!(
            before.iter().all(|old| old.id() != session.id()),
            "session id {} handed out again after the restart",
            session.id()
        );
    }
    // Every session from before learns it is gone at its next renewal.
    for old in &before {
        within(Duration::from_secs(10), old.lost()).await;
    }
    assert!(guard.is_lost());
    // Sessions from after are unaffected.
    assert!(after.iter().all(|session| !session.is_lost()));
    let again = coordinator
        .locker(&after[0], "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(
        again.token() > token_before,
        "token {} after the restart is not above {} from before",
        again.token().get(),
        token_before.get()
    );
    again.unlock().await.unwrap();
    for session in after {
        session.close().await.unwrap();
    }
}

/// A restart that lost a session, then a new session that took the very same id (which
/// random ids make all but impossible, so the test forces it by rewriting the key):
/// the old holder must not renew the newcomer's key, and must learn that it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_id_was_taken_over_reports_lost_and_leaves_the_new_owner_alone() {
    let Ok(url) = std::env::var("DISTSYNC_REDIS_URL") else {
        servers_available();
        return;
    };
    let coordinator = distsync::connect(&url).await.unwrap();
    let mut conn = raw(&url).await;
    // Renewals every 3 s: the steps below run before the next one, even when the test
    // waits a second or two for a CPU on a loaded runner.
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(9),
        ))
        .await
        .unwrap();
    let key = session_key(session.id());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0, "the session key {key} is missing ({pttl})");
    // The newcomer's key: same id, its own nonce, its own TTL.
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("newcomer-nonce")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Before its keepalive notices, the old session cannot join a line or a double
    // barrier through the newcomer's key either.
    assert!(
        !session.is_lost(),
        "the keepalive ran early: nothing tested"
    );
    let name = format!("taken-over-{}", session.id());
    let locked = coordinator
        .locker(&session, &name)
        .unwrap()
        .try_lock()
        .await;
    assert!(matches!(locked, Err(Error::SessionLost)), "{locked:?}");
    let entered = distsync_core::timeout(
        Duration::from_millis(500),
        coordinator
            .double_barrier(&session, &name, 2)
            .unwrap()
            .enter(),
    )
    .await;
    assert!(matches!(entered, Err(Error::SessionLost)), "{entered:?}");
    let listed: i64 = redis::cmd("HLEN")
        .arg(format!("{key}:held"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        listed, 0,
        "the old session listed entries under the newcomer's key"
    );
    // The next renewal, 3 s after the session's start, finds the key taken over.
    within(Duration::from_secs(10), session.lost()).await;
    let (value, pttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("newcomer-nonce"));
    assert!(
        pttl > 50_000,
        "the newcomer's key was renewed to the old session's TTL ({pttl} ms)"
    );
    // Closing the old session leaves the newcomer's key alone too.
    session.close().await.unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("newcomer-nonce"));
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A private server whose port another server took while it was down does not come back
/// as that other server: another `redis-server` on the port answers the readiness probe
/// as well as this one would, so the start must see that its own process does not
/// listen there (it could not bind, and exits) rather than hand a case a store that is
/// not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_whose_port_was_taken_does_not_start_as_the_other() {
    if !servers_available() {
        return;
    }
    let connect = connector(|url| async move { distsync_redis::backend(&url).await });
    let mut server = private::start(StoreKind::Redis, connect).await.unwrap();
    let port = url::Url::parse(server.url())
        .unwrap()
        .port()
        .expect("the private server's port");
    server.stop().await.unwrap();

    let mut other = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting another redis-server");
    within(Duration::from_secs(30), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let started = within(Duration::from_secs(90), server.start()).await;
    let error = started.expect_err("the private server started as the other server on its port");
    let error = error.to_string();
    assert!(
        error.contains("another process answers on its port")
            || (error.contains("its process exited") && error.contains("before it was ready")),
        "not the private server's own failure to answer: {error}"
    );
    other.kill().await.unwrap();
}
