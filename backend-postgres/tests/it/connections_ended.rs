//! Connections ended under a holder, against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`).
//!
//! A test binary of its own: the test ends *every* distsync connection to the
//! database, which would break the statements in flight of any test running beside it
//! in the same process (cargo runs test binaries one after the other).

use distsync_core::Primitives;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::server_url;
use distsync_core::{Backend, Name, SessionOptions};
use tokio::time::Instant;

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pgtest/{what}/{nanos:x}-{}", std::process::id())
}

/// Sessions and holds live in rows, not in connections: every connection of the
/// backend ended under a holder loses nothing; the pool reconnects, the session renews
/// and the lock stays held (nobody else gets it), then unlocks cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn ended_connections_lose_nothing() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let other = distsync_postgres::backend(&url).await.unwrap();
    let ttl = Duration::from_secs(1);
    let name = Name::new(unique("conn-ended")).unwrap();
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND application_name LIKE 'distsync%' \
           AND datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(ended > 0, "no connection of the backend was found");
    pool.close().await;
    let watcher = other.session(SessionOptions::with_ttl(ttl)).await.unwrap();
    let rival = other.locker(&watcher, name).unwrap();
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        assert!(!session.is_lost(), "a connection's end lost the session");
        assert!(
            rival.try_lock().await.unwrap().is_none(),
            "the lock was granted to another while its holder lives"
        );
        tokio::time::sleep(ttl / 4).await;
    }
    assert_eq!(guard.token(), guard.token());
    guard.unlock().await.unwrap();
    assert!(
        rival.try_lock().await.unwrap().is_some(),
        "free after unlock"
    );
}
