//! Compaction: reads and watches from before the window are refused as etcd's.

use bytes::Bytes;
use distsync_kv::kv::{EventKind, Kv, Range, Txn, TxnOp, WatchResponse};
use distsync_kv::StoreError;
use distsync_mysql::MysqlConfig;
use futures::StreamExt;
use sqlx::Connection as _;

use crate::common::*;

#[tokio::test]
async fn reads_and_watches_before_the_compaction_point_are_refused() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    put_one(&kv, "a", "1").await; // 2
    put_one(&kv, "a", "2").await; // 3
    put_one(&kv, "b", "1").await; // 4
    kv.txn(Txn::default().and_then(vec![TxnOp::delete("a")]))
        .await
        .unwrap(); // 5
    assert_eq!(kv.compact(4).await.unwrap(), 4);
    let compacted = kv.range(Range::key("a").at_revision(3)).await.unwrap_err();
    assert_eq!(
        store_error(&compacted),
        &StoreError::Compacted {
            requested: 3,
            compacted: 4
        }
    );
    // The compaction point itself stays exact, keys last written before it included.
    let four = kv.range(Range::prefix("").at_revision(4)).await.unwrap();
    assert_eq!(keys(&four), ["a", "b"]);
    assert_eq!(four.kvs[0].value, Bytes::from("2"));
    assert_eq!(
        keys(&kv.range(Range::prefix("").at_revision(5)).await.unwrap()),
        ["b"]
    );
    // What the compaction removed: the version of `a` that 3 superseded; kept: the
    // newest versions at or below 4, and everything after.
    assert_eq!(
        log_rows(&kv, &url).await,
        [
            (3, "a".to_owned()),
            (4, "b".to_owned()),
            (5, "a".to_owned())
        ]
    );
    // Backwards does nothing; past the present is an error.
    assert_eq!(kv.compact(2).await.unwrap(), 4);
    assert!(matches!(
        store_error(&kv.compact(9).await.unwrap_err()),
        StoreError::FutureRevision { .. }
    ));
    let mut old = kv.watch("a", false, 3).await.unwrap();
    assert_eq!(
        old.next().await.unwrap().unwrap(),
        WatchResponse::Compacted(4)
    );
    assert!(old.next().await.is_none(), "a compacted watch ends");
    // The deletion at the compaction point stays watchable.
    kv.compact(5).await.unwrap();
    let mut at_five = kv.watch("a", false, 5).await.unwrap();
    assert_eq!(
        events(at_five.next().await.unwrap().unwrap()),
        [(EventKind::Delete, "a".to_owned(), 5)]
    );
    // At 5 the deletion of `a` supersedes its put at 3; the deletion itself, at the
    // compaction point, stays (watched above).
    assert_eq!(
        log_rows(&kv, &url).await,
        [(4, "b".to_owned()), (5, "a".to_owned())]
    );
    drop_tables(&kv, &url).await;
}

/// The log's rows, as (revision, key), in revision order.
async fn log_rows(kv: &distsync_mysql::MysqlKv, url: &str) -> Vec<(i64, String)> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT revision, k FROM {} ORDER BY revision, sub",
        table(url, "log")
    ))
    .fetch_all(kv.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(revision, key)| (revision, String::from_utf8(key).unwrap()))
        .collect()
}

/// The named lock a process holds while it compacts the log of the tables of `url`
/// (the name the backend gives it: a hash of the database and the log table's name).
async fn take_compactor(conn: &mut sqlx::MySqlConnection, url: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT GET_LOCK(CONCAT('distsync-compactor:', \
         LEFT(SHA2(CONCAT(DATABASE(), ?), 256), 32)), 0)",
    )
    .bind(table(url, "log").into_bytes())
    .fetch_one(conn)
    .await
    .unwrap()
}

/// One process at a time compacts a store's log: while another process holds the
/// compactor's lock, a compaction waits for it on the server (in `GET_LOCK`) and goes
/// on once it is released; held throughout the request timeout, the compaction fails
/// as a transient error, having compacted nothing.
#[tokio::test]
async fn a_compaction_waits_while_another_process_compacts() {
    let Some((kv, url)) = store("&timeout=2s").await else {
        return;
    };
    put_one(&kv, "a", "1").await; // 2
    put_one(&kv, "a", "2").await; // 3
    put_one(&kv, "b", "1").await; // 4
    let config = MysqlConfig::parse(&url).unwrap();
    let mut other = sqlx::MySqlConnection::connect_with(config.connect_options())
        .await
        .unwrap();
    assert_eq!(take_compactor(&mut other, &url).await, 1);

    let second = connect(&url).await;
    let compacting = tokio::spawn(async move { second.compact(3).await });
    tokio::time::timeout(PATIENCE, async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE STATE = 'User lock' AND INFO LIKE '%distsync-compactor%'",
            )
            .fetch_one(&mut other)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the compaction waiting on the compactor's lock");
    assert!(!compacting.is_finished());
    let released: Option<i64> = sqlx::query_scalar(
        "SELECT RELEASE_LOCK(CONCAT('distsync-compactor:', \
         LEFT(SHA2(CONCAT(DATABASE(), ?), 256), 32)))",
    )
    .bind(table(&url, "log").into_bytes())
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(released, Some(1));
    let compacted = tokio::time::timeout(PATIENCE, compacting)
        .await
        .expect("the compaction going on once the lock is released")
        .unwrap()
        .unwrap();
    assert_eq!(compacted, 3);
    assert_eq!(
        log_rows(&kv, &url).await,
        [(3, "a".to_owned()), (4, "b".to_owned())]
    );

    // Held throughout the request timeout: a transient error, the point unmoved.
    assert_eq!(take_compactor(&mut other, &url).await, 1);
    let refused = kv.compact(4).await.unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    kv.range(Range::key("a").at_revision(3))
        .await
        .expect("revision 3 readable: the refused compaction moved no point");
    other.close().await.unwrap();
    assert_eq!(kv.compact(4).await.unwrap(), 4);
    drop_tables(&kv, &url).await;
}
