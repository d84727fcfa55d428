//! Leases on the server's clock: renewal, revoke and expiry deleting the keys in one
//! revision with delete events.

use std::time::Duration;

use distsync_core::session::KeepAlive;
use distsync_kv::kv::{EventKind, Kv, Range, Txn, TxnOp};
use futures::StreamExt;
use tokio::time::timeout;

use crate::common::*;

#[tokio::test]
async fn an_expired_lease_deletes_its_keys_in_one_revision() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let lease = kv.lease_grant(Duration::from_millis(1500)).await.unwrap();
    assert!(lease > 0);
    let written = kv
        .txn(Txn::default().and_then(vec![
            TxnOp::put("l/a", "1", lease),
            TxnOp::put("l/b", "1", lease),
            put("l/keep", "1"),
        ]))
        .await
        .unwrap()
        .revision;
    assert_eq!(get(&kv, "l/a").await.unwrap().lease, lease);
    assert_eq!(
        kv.lease_keep_alive(lease).await.unwrap(),
        KeepAlive::Renewed
    );
    let mut watch = kv.watch("l/", true, written + 1).await.unwrap();
    // No more renewals: the reaper ends it after about 1.5 s.
    let item = timeout(PATIENCE, watch.next())
        .await
        .expect("expiry in time");
    let deleted = events(item.unwrap().unwrap());
    assert_eq!(
        deleted,
        [
            (EventKind::Delete, "l/a".to_owned(), written + 1),
            (EventKind::Delete, "l/b".to_owned(), written + 1)
        ]
    );
    assert_eq!(
        keys(&kv.range(Range::prefix("l/")).await.unwrap()),
        ["l/keep"]
    );
    assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    let late = kv
        .txn(Txn::default().and_then(vec![TxnOp::put("l/c", "1", lease)]))
        .await
        .unwrap_err();
    assert_eq!(
        store_error(&late),
        &distsync_kv::StoreError::LeaseNotFound(lease)
    );
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn a_revoke_deletes_the_keys_and_can_be_repeated() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let written = kv
        .txn(Txn::default().and_then(vec![TxnOp::put("r/a", "1", lease)]))
        .await
        .unwrap()
        .revision;
    kv.lease_revoke(lease).await.unwrap();
    assert!(get(&kv, "r/a").await.is_none());
    assert_eq!(
        kv.range(Range::prefix("")).await.unwrap().revision,
        written + 1
    );
    kv.lease_revoke(lease).await.unwrap();
    assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    drop_tables(&kv, &url).await;
}

/// Puts attaching keys to a lease from another client while it is revoked: a put
/// that commits before the revoke's keys are checked under the revision lock is
/// deleted with the others, one after it fails, and no key outlives its lease.
#[tokio::test]
async fn a_revoke_racing_puts_on_its_lease_leaves_no_key() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let other = connect(&url).await;
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let puts = async {
        let mut written = 0;
        loop {
            let key = format!("race/{written}");
            match other
                .txn(Txn::default().and_then(vec![TxnOp::put(&key, "v", lease)]))
                .await
            {
                Ok(_) => written += 1,
                Err(error) => {
                    assert!(
                        matches!(
                            store_error(&error),
                            distsync_kv::StoreError::LeaseNotFound(_)
                        ),
                        "{error}"
                    );
                    return written;
                }
            }
        }
    };
    let revoke = async {
        // Some keys first, so that the revoke has keys to check.
        while kv.range(Range::prefix("race/")).await.unwrap().count < 5 {
            tokio::task::yield_now().await;
        }
        kv.lease_revoke(lease).await.unwrap();
    };
    let (written, ()) = tokio::join!(puts, revoke);
    assert!(written >= 5);
    assert_eq!(kv.range(Range::prefix("race/")).await.unwrap().count, 0);
    drop_tables(&kv, &url).await;
}

/// Renewals asked for at once are renewed together (one statement for many leases):
/// each gets its own answer, a revoked lease is gone, and each renewed lease expires a
/// TTL after a server time read before the renewals were asked for (its grant's expiry
/// was earlier).
#[tokio::test]
async fn renewals_asked_for_at_once_each_get_their_own_answer() {
    const LEASES: usize = 200;
    let Some((kv, url)) = store("").await else {
        return;
    };
    let ttl = Duration::from_secs(30);
    let mut leases = Vec::new();
    for _ in 0..LEASES {
        leases.push(kv.lease_grant(ttl).await.unwrap());
    }
    for lease in leases.iter().step_by(2) {
        kv.lease_revoke(*lease).await.unwrap();
    }
    let before: i64 = sqlx::query_scalar("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .fetch_one(kv.pool())
        .await
        .unwrap();
    let answers =
        futures::future::join_all(leases.iter().map(|lease| kv.lease_keep_alive(*lease))).await;
    let expiries = format!(
        "SELECT CAST(UNIX_TIMESTAMP(expires_at) * 1000000 AS SIGNED) FROM {} WHERE id = ?",
        table(&url, "leases")
    );
    for (index, (lease, answer)) in leases.iter().zip(answers).enumerate() {
        let expires: Option<i64> = sqlx::query_scalar(&expiries)
            .bind(lease)
            .fetch_optional(kv.pool())
            .await
            .unwrap();
        if index % 2 == 0 {
            assert_eq!(answer.unwrap(), KeepAlive::Gone, "revoked lease {index}");
            assert_eq!(expires, None, "revoked lease {index}");
        } else {
            assert_eq!(answer.unwrap(), KeepAlive::Renewed, "lease {index}");
            let expires = expires.expect("a renewed lease is there");
            let ttl_micros = i64::try_from(ttl.as_micros()).unwrap();
            assert!(
                expires >= before + ttl_micros,
                "lease {index} expires {} µs before a TTL after the renewals began",
                before + ttl_micros - expires
            );
        }
    }
    drop_tables(&kv, &url).await;
}
