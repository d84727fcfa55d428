//! Acknowledging in the caller's transaction on the test server (`DISTSYNC_POSTGRES_URL`;
//! skipped loudly when unset, a failure under `CI=true`): the effect and the removal of
//! the item commit together or not at all, and a stale delivery's acknowledgement rolls
//! its transaction back.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Backend, Error, SessionOptions};
use distsync_postgres::ack_in;
use sqlx::PgPool;

use crate::support::{table, unique, within};

/// The backend, a pool of the test's own and an effects table of the test's own.
async fn setup(what: &str) -> Option<(distsync_postgres::PostgresBackend, PgPool, String)> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let effects = table("effects", &unique(what));
    sqlx::query(&format!("CREATE TABLE {effects} (item text NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();
    Some((backend, pool, effects))
}

async fn effects_of(pool: &PgPool, effects: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT item FROM {effects} ORDER BY item"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_effect_and_the_acknowledgement_commit_together() {
    let Some((backend, pool, effects)) = setup("ack-in").await else {
        return;
    };
    let name = unique("ack-in");
    let queue = backend.queue(name.clone()).unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    queue.enqueue("x").await.unwrap();

    // Rolled back: no effect, and the item is back at once (the pending ack nacks it).
    let delivery = queue.try_receive(&session).await.unwrap().unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {effects} VALUES ('x')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let pending = ack_in(&mut tx, delivery).await.unwrap();
    tx.rollback().await.unwrap();
    drop(pending);
    let again = within(
        Duration::from_secs(10),
        "the rolled-back item's return",
        queue.receive(&session),
    )
    .await
    .unwrap();
    assert_eq!(again.redeliveries(), 1);
    assert!(effects_of(&pool, &effects).await.is_empty());

    // Committed: the effect, and no item.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {effects} VALUES ('x')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let pending = ack_in(&mut tx, again).await.unwrap();
    tx.commit().await.unwrap();
    pending.committed();
    assert_eq!(effects_of(&pool, &effects).await, ["x"]);
    assert!(queue.try_receive(&session).await.unwrap().is_none());
    assert_eq!(queue.len().await.unwrap(), 0);
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_delivery_is_refused_and_its_writes_roll_back() {
    let Some((backend, pool, effects)) = setup("ack-in-stale").await else {
        return;
    };
    let name = unique("ack-in-stale");
    let queue = backend.queue(name.clone()).unwrap();
    let (a, b) = (
        backend.session(SessionOptions::default()).await.unwrap(),
        backend.session(SessionOptions::default()).await.unwrap(),
    );
    queue.enqueue("y").await.unwrap();
    let stale = queue.try_receive(&a).await.unwrap().unwrap();
    // A's session ends (as when it is paused past its TTL): the item goes to B.
    a.close().await.unwrap();
    let current = within(
        Duration::from_secs(10),
        "the redelivery to B",
        queue.receive(&b),
    )
    .await
    .unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {effects} VALUES ('stale')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(matches!(
        ack_in(&mut tx, stale).await,
        Err(Error::SessionLost)
    ));
    // Even a caller that goes on to commit commits nothing: the transaction is aborted.
    drop(tx.commit().await);
    assert!(effects_of(&pool, &effects).await.is_empty());

    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {effects} VALUES ('current')"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let pending = ack_in(&mut tx, current).await.unwrap();
    tx.commit().await.unwrap();
    pending.committed();
    assert_eq!(effects_of(&pool, &effects).await, ["current"]);
    assert_eq!(queue.len().await.unwrap(), 0);
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_of_another_backend_is_refused() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let memory = distsync::store::memory::MemoryBackend::new();
    let session = memory.session(SessionOptions::default()).await.unwrap();
    let queue = memory.queue(unique("ack-in-memory")).unwrap();
    queue.enqueue("z").await.unwrap();
    let delivery = queue.try_receive(&session).await.unwrap().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    assert!(matches!(
        ack_in(&mut conn, delivery).await,
        Err(Error::InvalidArgument(_))
    ));
}
