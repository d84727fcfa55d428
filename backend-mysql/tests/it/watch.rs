//! Watches: history from a past revision, then live changes, from this process and
//! from another client of the same tables.

use std::time::Duration;

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

/// The next response of `watch`, as events, within [`PATIENCE`].
async fn next(
    watch: &mut BoxStream<'static, distsync_core::Result<WatchResponse>>,
) -> Vec<(EventKind, String, Revision)> {
    let item = timeout(PATIENCE, watch.next())
        .await
        .expect("an event in time");
    events(item.expect("the watch goes on").unwrap())
}

/// A pool the caller fills (its own transactions, say) holds back no delivery: the
/// hub reads the log through a connection of its own.
#[tokio::test]
async fn a_full_pool_holds_back_no_delivery() {
    let Some((kv, url)) = store("&pool_size=1").await else {
        return;
    };
    let mut watch = kv.watch("k", false, 0).await.unwrap();
    // The pool's one connection, held as a caller's open transaction holds it.
    let held = kv.pool().acquire().await.unwrap();
    let other = connect(&url).await;
    let written = put_one(&other, "k", "1").await;
    assert_eq!(
        next(&mut watch).await,
        [(EventKind::Put, "k".to_owned(), written)]
    );
    drop(held);
    drop_tables(&kv, &url).await;
}

/// A read of the log that its connection never answers (a silent partition) holds back
/// no new watch of the process, and ends within the request timeout, which ends the
/// hub's open watches (the recipes watch again); once the connection answers again, a
/// new watch follows the log.
#[tokio::test]
async fn an_unanswered_read_of_the_log_holds_back_no_new_watch() {
    use distsync_conformance::faults::proxy::{rewrite_url, upstreams, PartitionMode, Proxy};
    let Some((kv, url)) = store("").await else {
        return;
    };
    let proxy = Proxy::start(upstreams(&url).unwrap().remove(0))
        .await
        .unwrap();
    let through = format!(
        "{}&timeout=3s",
        rewrite_url(&url, &[proxy.address()]).unwrap()
    );
    let cut = connect(&through).await;
    let mut first = cut.watch("k", false, 0).await.unwrap();
    proxy.set(PartitionMode::Silent);
    // The hub reads the log every poll interval (20 ms) while a watch is open: within
    // this second its read hangs on the silent connection. A watch from now needs no
    // statement of a hub with watches open, so each opens at once all the same.
    let silent = tokio::time::Instant::now();
    let mut opened = Vec::new();
    while silent.elapsed() < Duration::from_secs(1) {
        let watch = timeout(Duration::from_millis(900), cut.watch("k", false, 0))
            .await
            .expect("a new watch opens while the hub's read goes unanswered")
            .unwrap();
        opened.push(watch);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The read runs out of time (3 s): the open watches end.
    let ended = timeout(PATIENCE, first.next())
        .await
        .expect("the hub's unanswered read ends within the request timeout");
    assert!(
        !matches!(ended, Some(Ok(WatchResponse::Events(_)))),
        "no write happened: the watch ends, it does not deliver"
    );
    proxy.heal();
    let mut again = timeout(PATIENCE, async {
        loop {
            match cut.watch("k", false, 0).await {
                Ok(watch) => return watch,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("a watch opens after the heal");
    let written = put_one(&kv, "k", "1").await;
    assert_eq!(
        next(&mut again).await,
        [(EventKind::Put, "k".to_owned(), written)]
    );
    drop(opened);
    drop_tables(&kv, &url).await;
}
