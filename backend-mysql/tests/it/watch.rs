//! Watches: history from a past revision, then live changes, from this process and
//! from another client of the same tables.

use distsync_kv::kv::{EventKind, Kv, Txn, TxnOp};
use distsync_kv::kv::{Revision, WatchResponse};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::timeout;

use crate::common::*;

#[tokio::test]
async fn a_watch_from_a_past_revision_replays_then_follows() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    put_one(&kv, "w/a", "1").await; // 2
    put_one(&kv, "x", "1").await; // 3
    kv.txn(Txn::default().and_then(vec![put("w/b", "1"), put("w/c", "1")]))
        .await
        .unwrap(); // 4
    let mut watch = kv.watch("w/", true, 2).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        [(EventKind::Put, "w/a".to_owned(), 2)]
    );
    // One transaction's changes come as one response.
    assert_eq!(
        next(&mut watch).await,
        [
            (EventKind::Put, "w/b".to_owned(), 4),
            (EventKind::Put, "w/c".to_owned(), 4)
        ]
    );
    kv.txn(Txn::default().and_then(vec![TxnOp::Delete {
        key: "w/".to_owned(),
        prefix: true,
    }]))
    .await
    .unwrap(); // 5
    assert_eq!(
        next(&mut watch).await,
        [
            (EventKind::Delete, "w/a".to_owned(), 5),
            (EventKind::Delete, "w/b".to_owned(), 5),
            (EventKind::Delete, "w/c".to_owned(), 5)
        ]
    );
    // Another client's write is found by the poll.
    let other = connect(&url).await;
    put_one(&other, "w/d", "1").await; // 6
    assert_eq!(
        next(&mut watch).await,
        [(EventKind::Put, "w/d".to_owned(), 6)]
    );
    // From now (0): no history, though `w/d` has some.
    let mut now = kv.watch("w/d", false, 0).await.unwrap();
    put_one(&other, "w/d", "again").await; // 7
    assert_eq!(
        next(&mut now).await,
        [(EventKind::Put, "w/d".to_owned(), 7)]
    );
    // A watch of one key sees that key only.
    let mut one = kv.watch("w/d", false, 8).await.unwrap();
    put_one(&other, "w/e", "1").await; // 8
    put_one(&other, "w/d", "2").await; // 9
    assert_eq!(
        next(&mut one).await,
        [(EventKind::Put, "w/d".to_owned(), 9)]
    );
    drop_tables(&kv, &url).await;
}

/// A write of another process reaches a watch through the doorbell: both clients poll
/// once an hour, so the listener waits thirty seconds at a time, and the event arrives
/// well inside the listener's wait, which only the writer's ring can end early.
#[tokio::test]
async fn a_write_of_another_process_rings_the_watch_before_any_poll() {
    let Some((watcher, url)) = store("&poll_interval=1h").await else {
        return;
    };
    let writer = connect(&url).await;
    let mut watch = watcher.watch("bell/k", false, 0).await.unwrap();
    registered(&watcher, &url, "bell/k").await;
    put_one(&writer, "bell/k", "1").await;
    let rung = timeout(std::time::Duration::from_secs(20), watch.next())
        .await
        .expect("the write reached the watch before the listener's 30 s wait ended");
    let changed = events(rung.expect("the watch goes on").unwrap());
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].0, changed[0].1.as_str()),
        (EventKind::Put, "bell/k")
    );
    drop_tables(&watcher, &url).await;
}

/// Waits (a bounded poll of the table, within [`PATIENCE`]) until `key` is registered
/// with the doorbell of some listener of `url`'s tables.
async fn registered(kv: &distsync_mysql::MysqlKv, url: &str, key: &str) {
    let prefix = distsync_mysql::MysqlConfig::parse(url)
        .unwrap()
        .table_prefix()
        .to_owned();
    let sql = format!("SELECT COUNT(*) FROM {prefix}bells WHERE k = ?");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found: Result<i64, _> = sqlx::query_scalar(&sql)
            .bind(key.as_bytes())
            .fetch_one(kv.pool())
            .await;
        if matches!(found, Ok(n) if n > 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} was not registered with the doorbell within {PATIENCE:?}: {found:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The next response of `watch`, as events, within [`PATIENCE`].
async fn next(
    watch: &mut BoxStream<'static, distsync_core::Result<WatchResponse>>,
) -> Vec<(EventKind, String, Revision)> {
    let item = timeout(PATIENCE, watch.next())
        .await
        .expect("an event in time");
    events(item.expect("the watch goes on").unwrap())
}
