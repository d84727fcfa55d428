//! The transactional outbox on the test server (`DISTSYNC_POSTGRES_URL`; skipped loudly
//! when unset, a failure under `CI=true`): an item enqueued in the caller's transaction
//! exists if and only if it commits, its consumer is woken at the commit, and
//! idempotency keys work across transactions.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::queue::{Enqueued, IdempotencyKey};
use distsync_core::{Backend, SessionOptions};
use sqlx::PgPool;

use crate::support::{table, unique, within};

/// The backend, a pool of the test's own and an orders table of the test's own.
async fn setup(what: &str) -> Option<(distsync_postgres::PostgresBackend, PgPool, String)> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let orders = table("orders", &unique(what));
    sqlx::query(&format!("CREATE TABLE {orders} (id bigint PRIMARY KEY)"))
        .execute(&pool)
        .await
        .unwrap();
    Some((backend, pool, orders))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_exists_if_and_only_if_its_transaction_commits() {
    let Some((backend, pool, orders)) = setup("outbox-commit").await else {
        return;
    };
    let name = unique("outbox-commit");
    let outbox = backend.outbox(name.as_str()).unwrap();
    let queue = backend.queue(name.clone()).unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();

    let mut rolled_back = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {orders} VALUES (1)"))
        .execute(&mut *rolled_back)
        .await
        .unwrap();
    outbox.enqueue(&mut rolled_back, "order 1").await.unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!(queue.len().await.unwrap(), 0, "a rollback leaves no item");

    // A consumer waits; the item it gets is the committed one, once committed.
    let waiting = {
        let queue = backend.queue(name.clone()).unwrap();
        let session = session.clone();
        tokio::spawn(async move { queue.receive(&session).await })
    };
    let mut committed = pool.begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {orders} VALUES (2)"))
        .execute(&mut *committed)
        .await
        .unwrap();
    outbox.enqueue(&mut committed, "order 2").await.unwrap();
    assert!(
        queue.try_receive(&session).await.unwrap().is_none(),
        "the item is invisible before the commit"
    );
    committed.commit().await.unwrap();
    // Waiters re-check on their own every 20 s: an answer within 10 s is the wake-up
    // sent at the commit.
    let delivery = within(Duration::from_secs(10), "the waiting consumer", waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.item(), "order 2");
    delivery.ack().await.unwrap();
    assert_eq!(queue.len().await.unwrap(), 0);
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_hold_across_transactions() {
    let Some((backend, pool, _orders)) = setup("outbox-keys").await else {
        return;
    };
    let name = unique("outbox-keys");
    let outbox = backend.outbox(name.as_str()).unwrap();
    let queue = backend.queue(name.clone()).unwrap();
    let key = IdempotencyKey::new("order-7").unwrap();

    // Recorded by a transaction that rolls back: not recorded at all.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        outbox.enqueue_once(&mut tx, &key, "a", 0).await.unwrap(),
        Enqueued::New
    );
    tx.rollback().await.unwrap();

    let mut first = pool.begin().await.unwrap();
    assert_eq!(
        outbox.enqueue_once(&mut first, &key, "b", 0).await.unwrap(),
        Enqueued::New
    );
    // A second transaction with the key waits for the first, which rolls back: the
    // second's item is the one.
    let second = {
        let outbox = outbox.clone();
        let pool = pool.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut second = pool.begin().await.unwrap();
            let enqueued = outbox
                .enqueue_once(&mut second, &key, "c", 0)
                .await
                .unwrap();
            second.commit().await.unwrap();
            enqueued
        })
    };
    first.rollback().await.unwrap();
    assert_eq!(
        within(Duration::from_secs(10), "the second enqueue", second)
            .await
            .unwrap(),
        Enqueued::New
    );

    // Committed, the key refuses the next, in a transaction or not.
    let mut third = pool.begin().await.unwrap();
    assert_eq!(
        outbox.enqueue_once(&mut third, &key, "d", 0).await.unwrap(),
        Enqueued::Duplicate
    );
    third.commit().await.unwrap();
    assert_eq!(
        queue.enqueue_once(&key, "e", 0).await.unwrap(),
        Enqueued::Duplicate
    );
    assert_eq!(queue.try_dequeue().await.unwrap().unwrap(), "c");
    assert!(queue.try_dequeue().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_item_is_refused_before_the_transaction_sees_it() {
    let Some((backend, pool, _orders)) = setup("outbox-oversized").await else {
        return;
    };
    let name = unique("outbox-oversized");
    let outbox = backend.outbox(name.as_str()).unwrap();
    let queue = backend.queue(name.clone()).unwrap();
    let limit = distsync_postgres::MAX_VALUE_SIZE;
    let key = IdempotencyKey::new("oversized").unwrap();
    let mut tx = pool.begin().await.unwrap();
    let over = vec![b'o'; limit + 1];
    let refusals = [
        outbox.enqueue(&mut tx, over.clone()).await.map(drop),
        outbox
            .enqueue_with_priority(&mut tx, over.clone(), 1)
            .await
            .map(drop),
        outbox.enqueue_once(&mut tx, &key, over, 0).await.map(drop),
    ];
    for refused in refusals {
        assert!(
            matches!(
                refused,
                Err(distsync_core::Error::TooLarge { size, limit: said, .. })
                    if size == limit + 1 && said == limit
            ),
            "{refused:?}"
        );
    }
    // The transaction is untouched: a statement after the refusals runs, and commits.
    outbox.enqueue(&mut tx, "after").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        queue.len().await.unwrap(),
        1,
        "only the item after the refusals"
    );
}
