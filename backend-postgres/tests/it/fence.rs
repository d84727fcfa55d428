//! The worked example of `distsync_postgres::fence`: a holder that lost its lock while
//! paused writes with its old token, and the resource refuses it, on the test server
//! (`DISTSYNC_POSTGRES_URL`; skipped loudly when unset, a failure under `CI=true`).

use distsync_core::Primitives;
use std::time::{SystemTime, UNIX_EPOCH};

use distsync_conformance::server_url;
use distsync_core::{Backend, Name, SessionOptions};
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_holder_is_refused_at_the_resource() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = Name::new(format!("fence-test/{unique}")).unwrap();
    let resource = format!("accounts/{unique}");
    let (a, b) = (
        backend.session(SessionOptions::default()).await.unwrap(),
        backend.session(SessionOptions::default()).await.unwrap(),
    );
    // A holds, then (as if paused past its lease) loses the lock to B.
    let guard_a = backend
        .locker(&a, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let stale = guard_a.token();
    guard_a.unlock().await.unwrap();
    let guard_b = backend.locker(&b, name).unwrap().lock().await.unwrap();
    assert!(guard_b.token() > stale);

    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS fence_test_accounts (id text PRIMARY KEY, writer text)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert!(
        write(&mut conn, &resource, guard_b.token(), "b").await,
        "the holder writes"
    );
    assert!(
        write(&mut conn, &resource, guard_b.token(), "b").await,
        "again, with the same token"
    );
    assert!(
        !write(&mut conn, &resource, stale, "a").await,
        "the stale holder is refused"
    );
    let writer: String = sqlx::query_scalar("SELECT writer FROM fence_test_accounts WHERE id = $1")
        .bind(&resource)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(writer, "b");
    guard_b.unlock().await.unwrap();
}

/// Writes `writer` into the account `resource` in one transaction, if `token` is
/// admitted by the fence; whether it was.
async fn write(
    conn: &mut sqlx::PgConnection,
    resource: &str,
    token: distsync_core::FencingToken,
    writer: &str,
) -> bool {
    let mut tx = conn.begin().await.unwrap();
    let admitted = distsync_postgres::fence::admit(&mut tx, "fence_test_fences", resource, token)
        .await
        .unwrap();
    if admitted {
        sqlx::query(
            "INSERT INTO fence_test_accounts VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET writer = $2",
        )
        .bind(resource)
        .bind(writer)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    admitted
}
