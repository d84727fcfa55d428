//! Compaction: reads and watches from before the window are refused as etcd's.

use bytes::Bytes;
use distsync_kv::kv::{EventKind, Kv, Range, Txn, TxnOp, WatchResponse};
use distsync_kv::StoreError;
use futures::StreamExt;

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
