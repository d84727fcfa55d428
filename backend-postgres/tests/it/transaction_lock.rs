//! Transaction locks on the test server (`DISTSYNC_POSTGRES_URL`; skipped loudly when
//! unset, a failure under `CI=true`): held until commit or rollback, exclusive, with
//! tokens that grow across rollbacks.

use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::Error;
use sqlx::PgPool;

use crate::support::{unique, within};

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_lock_is_held_until_commit_or_rollback() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let lock = backend
        .transaction_lock(unique("xact-lock").as_str())
        .unwrap();

    let mut first = pool.begin().await.unwrap();
    let t1 = lock.lock(&mut first).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    assert_eq!(lock.try_lock(&mut other).await.unwrap(), None, "held");
    // A waiting transaction is granted when the holder commits.
    let waiting = {
        let lock = lock.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let token = lock.lock(&mut tx).await.unwrap();
            tx.rollback().await.unwrap();
            token
        })
    };
    first.commit().await.unwrap();
    let t2 = within(Duration::from_secs(10), "the waiting lock", waiting)
        .await
        .unwrap();
    assert!(t2 > t1, "{t2} after {t1}");

    // Rolled back (above), the lock is free again and the next token is higher still.
    let t3 = lock.try_lock(&mut other).await.unwrap().expect("free");
    assert!(t3 > t2, "{t3} after {t2}");
    other.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_lock_needs_a_transaction() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let mut conn = backend.pool().acquire().await.unwrap();
    let lock = backend.transaction_lock("xact-lock/outside").unwrap();
    assert!(matches!(
        lock.lock(&mut conn).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        backend.transaction_lock("bad\0name"),
        Err(Error::InvalidName { .. })
    ));
}
