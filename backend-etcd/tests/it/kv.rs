//! `EtcdKv` against a real etcd (`DISTSYNC_ETCD_URL`): every operation of the
//! revisioned key-value model the recipes are built on.

use crate::common;
use distsync_core::Primitives;

use std::time::Duration;

use bytes::Bytes;
use distsync_core::{Backend, Error, KeepAlive, SessionOptions};
use distsync_etcd::{EtcdConfig, EtcdKv};
use distsync_kv::kv::{
    Compare, CompareOp, EventKind, Kv, Range, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchEvent, WatchResponse,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use common::{etcd_metric, etcd_url, eventually, private_etcd, single_endpoint, unique, within};

const WAIT: Duration = Duration::from_secs(10);

/// A connected store and a fresh key prefix for one test.
async fn setup(test: &str) -> Option<(EtcdKv, String)> {
    let url = etcd_url()?;
    let config = EtcdConfig::parse(&url).unwrap();
    let kv = EtcdKv::connect(config.endpoints()).await.unwrap();
    Some((kv, format!("distsync-test/kv/{}/", unique(test))))
}

async fn put(kv: &EtcdKv, key: &str, value: &str) -> i64 {
    let response = kv
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(key, value.to_owned(), 0)]))
        .await
        .unwrap();
    assert!(response.succeeded);
    assert_eq!(response.responses, vec![TxnOpResponse::Put]);
    response.revision
}

async fn next_events(
    stream: &mut BoxStream<'static, distsync_core::Result<WatchResponse>>,
) -> Vec<WatchEvent> {
    match within(WAIT, "a watch event", stream.next()).await {
        Some(Ok(WatchResponse::Events(events))) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn range_reads_keys_prefixes_and_sorts() {
    let Some((kv, ns)) = setup("range").await else {
        return;
    };
    let r1 = put(&kv, &format!("{ns}b"), "1").await;
    let r2 = put(&kv, &format!("{ns}a"), "2").await;
    let r3 = put(&kv, &format!("{ns}c"), "3").await;
    let r4 = put(&kv, &format!("{ns}b"), "4").await;
    assert!(r1 < r2 && r2 < r3 && r3 < r4);

    let one = kv.range(Range::key(format!("{ns}b"))).await.unwrap();
    assert_eq!(one.count, 1);
    assert!(one.revision >= r4);
    let b = &one.kvs[0];
    assert_eq!(b.key, format!("{ns}b"));
    assert_eq!(b.value, Bytes::from("4"));
    assert_eq!(
        (b.create_revision, b.mod_revision, b.version, b.lease),
        (r1, r4, 2, 0)
    );

    let missing = kv.range(Range::key(format!("{ns}zz"))).await.unwrap();
    assert_eq!((missing.count, missing.kvs.len()), (0, 0));

    let all = kv.range(Range::prefix(&ns)).await.unwrap();
    let keys: Vec<_> = all
        .kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(&ns))
        .collect();
    assert_eq!(keys, ["a", "b", "c"], "unsorted ranges come in key order");
    assert_eq!(all.count, 3);

    let first_key = |range: Range| {
        let kv = &kv;
        let ns = &ns;
        async move {
            let response = kv.range(range).await.unwrap();
            assert_eq!(response.count, 3, "count ignores the limit");
            assert_eq!(response.kvs.len(), 1);
            response.kvs[0]
                .key
                .trim_start_matches(ns.as_str())
                .to_owned()
        }
    };
    assert_eq!(first_key(Range::prefix(&ns).first_create()).await, "b");
    assert_eq!(first_key(Range::prefix(&ns).last_create()).await, "c");
    assert_eq!(first_key(Range::prefix(&ns).first_rev()).await, "a");
    assert_eq!(first_key(Range::prefix(&ns).last_rev()).await, "b");
    assert_eq!(first_key(Range::prefix(&ns).first_key()).await, "a");
    assert_eq!(first_key(Range::prefix(&ns).last_key()).await, "c");

    let sorted = kv
        .range(Range::prefix(&ns).sorted(SortTarget::CreateRevision, SortOrder::Descend, 2))
        .await
        .unwrap();
    let keys: Vec<_> = sorted
        .kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(&ns))
        .collect();
    assert_eq!(keys, ["c", "a"]);

    // A limit of 0 and revision bounds of 0 mean none, as in etcd.
    let unbounded = kv
        .range(
            Range::prefix(&ns)
                .sorted(SortTarget::CreateRevision, SortOrder::Ascend, 0)
                .max_create_revision(0)
                .max_mod_revision(0),
        )
        .await
        .unwrap();
    let keys: Vec<_> = unbounded
        .kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(&ns))
        .collect();
    assert_eq!(keys, ["b", "a", "c"]);

    // Go's `WithMaxCreateRev(r2)`: the keys created at or before r2 (b, a).
    let older = kv
        .range(Range::prefix(&ns).last_create().max_create_revision(r2))
        .await
        .unwrap();
    assert_eq!(older.kvs[0].key, format!("{ns}a"));
    let unchanged = kv
        .range(Range::prefix(&ns).max_mod_revision(r3))
        .await
        .unwrap();
    let keys: Vec<_> = unchanged
        .kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(&ns))
        .collect();
    assert_eq!(keys, ["a", "c"]);

    let past = kv
        .range(Range::key(format!("{ns}b")).at_revision(r3))
        .await
        .unwrap();
    assert_eq!(past.kvs[0].value, Bytes::from("1"));
    assert!(past.revision >= r4, "the header gives the current revision");
}

#[tokio::test]
async fn txn_compares_and_branches() {
    let Some((kv, ns)) = setup("txn").await else {
        return;
    };
    let key = format!("{ns}k");
    let create_if_absent = |value: &'static str| {
        Txn::when(vec![Compare::create_revision(&key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(&key, value, 0)])
            .or_else(vec![TxnOp::Range(Range::key(&key))])
    };
    let created = kv.txn(create_if_absent("first")).await.unwrap();
    assert!(created.succeeded);
    let lost = kv.txn(create_if_absent("second")).await.unwrap();
    assert!(!lost.succeeded);
    // Other tests write to the same etcd, so the store's revision may have moved on; the
    // key is what a failed compare must leave alone.
    assert!(lost.revision >= created.revision);
    let existing = lost.range(0).unwrap();
    assert_eq!(existing.kvs[0].value, Bytes::from("first"));
    assert_eq!(existing.kvs[0].create_revision, created.revision);
    assert_eq!(
        existing.kvs[0].mod_revision, created.revision,
        "a failed compare changes nothing"
    );
    assert_eq!(existing.revision, lost.revision);

    let rev = created.revision;
    for (compare, holds) in [
        (Compare::mod_revision(&key, CompareOp::Equal, rev), true),
        (Compare::mod_revision(&key, CompareOp::NotEqual, rev), false),
        (Compare::mod_revision(&key, CompareOp::Less, rev + 1), true),
        (Compare::mod_revision(&key, CompareOp::Greater, rev), false),
        (Compare::create_revision(&key, CompareOp::Greater, 0), true),
        (Compare::version(&key, CompareOp::Equal, 1), true),
        (Compare::version(&key, CompareOp::Greater, 1), false),
        (
            Compare::version(format!("{ns}none"), CompareOp::Equal, 0),
            true,
        ),
    ] {
        let response = kv.txn(Txn::when(vec![compare.clone()])).await.unwrap();
        assert_eq!(response.succeeded, holds, "{compare:?}");
    }

    // Several operations in one branch, answered in order (etcd refuses to write one
    // key twice in a transaction, so the prefix is filled first).
    let filled = kv
        .txn(Txn::when(vec![]).and_then(vec![
            TxnOp::put(format!("{ns}p/1"), "x", 0),
            TxnOp::put(format!("{ns}p/2"), "y", 0),
        ]))
        .await
        .unwrap();
    let written = kv.range(Range::prefix(format!("{ns}p/"))).await.unwrap();
    for kv in &written.kvs {
        assert_eq!(
            kv.mod_revision, filled.revision,
            "one transaction, one revision"
        );
    }
    assert!(filled.revision > rev);
    let response = kv
        .txn(Txn::when(vec![]).and_then(vec![
            TxnOp::put(format!("{ns}q"), "z", 0),
            TxnOp::Range(Range::prefix(format!("{ns}p/"))),
            TxnOp::Delete {
                key: format!("{ns}p/"),
                prefix: true,
            },
            TxnOp::delete(&key),
            TxnOp::delete(format!("{ns}none")),
        ]))
        .await
        .unwrap();
    assert_eq!(response.responses.len(), 5);
    assert_eq!(response.responses[0], TxnOpResponse::Put);
    assert_eq!(response.range(1).unwrap().count, 2);
    assert_eq!(response.responses[2], TxnOpResponse::Delete(2));
    assert_eq!(response.responses[3], TxnOpResponse::Delete(1));
    assert_eq!(response.responses[4], TxnOpResponse::Delete(0));
    assert!(response.revision > filled.revision);
    let left = kv.range(Range::prefix(&ns)).await.unwrap();
    assert_eq!(left.kvs.len(), 1);
    assert_eq!(left.kvs[0].key, format!("{ns}q"));
}

#[tokio::test]
async fn watch_sees_puts_and_deletes_from_a_revision() {
    let Some((kv, ns)) = setup("watch").await else {
        return;
    };
    let key = format!("{ns}w");
    let r1 = put(&kv, &key, "1").await;
    let r2 = put(&kv, &key, "2").await;

    // From the past: replays both puts.
    let mut replay = kv.watch(&key, false, r1).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_events(&mut replay).await);
    }
    assert_eq!(seen[0].kind, EventKind::Put);
    assert_eq!(
        (seen[0].kv.value.clone(), seen[0].kv.mod_revision),
        (Bytes::from("1"), r1)
    );
    assert_eq!(
        (seen[1].kv.value.clone(), seen[1].kv.version),
        (Bytes::from("2"), 2)
    );

    // From the next revision, on a prefix: a put on another key, then a delete.
    let mut live = kv.watch(&ns, true, r2 + 1).await.unwrap();
    let other = format!("{ns}other");
    let r3 = put(&kv, &other, "o").await;
    let deleted = kv
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::delete(&key)]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_events(&mut live).await);
    }
    assert_eq!(
        (seen[0].kind, seen[0].kv.key.as_str()),
        (EventKind::Put, other.as_str())
    );
    assert_eq!(seen[0].kv.create_revision, r3);
    assert_eq!(seen[1].kind, EventKind::Delete);
    assert_eq!(seen[1].kv.key, key);
    assert_eq!(seen[1].kv.mod_revision, deleted.revision);

    // The replay watch keeps following the key.
    let events = next_events(&mut replay).await;
    assert_eq!(events[0].kind, EventKind::Delete);
}

/// At a private etcd: a compaction is server-wide, and on the shared server it would
/// fail the reads and watches of other tests at older revisions.
#[tokio::test]
async fn a_watch_from_a_compacted_revision_says_so() {
    let Some(server) = private_etcd().await else {
        return;
    };
    let config = EtcdConfig::parse(server.url()).unwrap();
    let kv = EtcdKv::connect(config.endpoints()).await.unwrap();
    let key = "compacted/c".to_owned();
    let r1 = put(&kv, &key, "1").await;
    let r2 = put(&kv, &key, "2").await;
    kv.client().clone().compact(r2, None).await.unwrap();
    let mut stream = kv.watch(&key, false, r1).await.unwrap();
    match within(WAIT, "the compaction notice", stream.next()).await {
        Some(Ok(WatchResponse::Compacted(revision))) => assert!(revision >= r2),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        within(WAIT, "the end of the stream", stream.next())
            .await
            .is_none(),
        "the stream ends after Compacted"
    );
    // A read at a compacted revision is an error from the store, not a panic.
    let error = kv
        .range(Range::key(&key).at_revision(r1))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
}

/// The number of watchers etcd has, from its metrics endpoint.
async fn watcher_total(endpoint: &str) -> i64 {
    etcd_metric(endpoint, "etcd_debugging_mvcc_watcher_total", &[]).await as i64
}

/// Counted at a private etcd: the watcher gauge of a shared server moves with every
/// other test's watches, so a count there can neither reach nor leave a mark reliably.
#[tokio::test]
async fn dropping_a_watch_cancels_it_on_the_server() {
    let Some(server) = private_etcd().await else {
        return;
    };
    let endpoint = single_endpoint(server.url());
    let config = EtcdConfig::parse(server.url()).unwrap();
    let kv = EtcdKv::connect(config.endpoints()).await.unwrap();
    const WATCHES: i64 = 20;
    let before = watcher_total(&endpoint).await;
    let mut streams = Vec::new();
    for i in 0..WATCHES {
        streams.push(kv.watch(&format!("cancel/{i}"), false, 0).await.unwrap());
    }
    eventually(WAIT, "the watchers to be counted", || async {
        (watcher_total(&endpoint).await == before + WATCHES).then_some(())
    })
    .await;
    drop(streams);
    eventually(WAIT, "etcd to cancel the dropped watches", || async {
        (watcher_total(&endpoint).await == before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn leases_grant_renew_expire_and_revoke() {
    let Some((kv, ns)) = setup("lease").await else {
        return;
    };

    // The shortest lease etcd grants is what the backend declares.
    let short = kv.lease_grant(Duration::from_millis(300)).await.unwrap();
    let ttl = kv
        .client()
        .clone()
        .lease_time_to_live(short, None)
        .await
        .unwrap();
    assert_eq!(
        Duration::from_secs(ttl.granted_ttl() as u64),
        distsync_etcd::MIN_SESSION_TTL,
        "etcd's minimum lease TTL"
    );
    kv.lease_revoke(short).await.unwrap();

    let lease = kv.lease_grant(Duration::from_millis(4500)).await.unwrap();
    let ttl = kv
        .client()
        .clone()
        .lease_time_to_live(lease, None)
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 5, "TTLs round up to whole seconds");
    assert_eq!(
        kv.lease_keep_alive(lease).await.unwrap(),
        KeepAlive::Renewed
    );

    let key = format!("{ns}held");
    kv.txn(Txn::when(vec![]).and_then(vec![TxnOp::put(&key, "v", lease)]))
        .await
        .unwrap();
    let held = kv.range(Range::key(&key)).await.unwrap();
    assert_eq!(held.kvs[0].lease, lease);
    // A put that ignores the lease keeps it.
    kv.txn(Txn::when(vec![]).and_then(vec![TxnOp::put_ignore_lease(&key, "w")]))
        .await
        .unwrap();
    let kept = kv.range(Range::key(&key)).await.unwrap();
    assert_eq!(
        (kept.kvs[0].lease, kept.kvs[0].value.clone()),
        (lease, Bytes::from("w"))
    );

    let mut deletion = kv.watch(&key, false, kept.revision + 1).await.unwrap();
    kv.lease_revoke(lease).await.unwrap();
    let events = next_events(&mut deletion).await;
    assert_eq!(
        events[0].kind,
        EventKind::Delete,
        "revoking deletes the lease's keys"
    );
    assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    kv.lease_revoke(lease)
        .await
        .expect("revoking twice is harmless");

    // A lease nobody renews expires, deleting its keys.
    let lease = kv
        .lease_grant(distsync_etcd::MIN_SESSION_TTL)
        .await
        .unwrap();
    let key = format!("{ns}expiring");
    let put = kv
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(&key, "v", lease)]))
        .await
        .unwrap();
    let mut deletion = kv.watch(&key, false, put.revision + 1).await.unwrap();
    let events = next_events(&mut deletion).await;
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
}

#[tokio::test]
async fn store_errors_are_typed() {
    let Some((kv, _ns)) = setup("errors").await else {
        return;
    };
    let error = kv.range(Range::key("")).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                backend: "etcd",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_is_a_connection_error() {
    // A port nothing listens on: bind one, note it, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let error = within(
        WAIT,
        "connect to fail",
        distsync::connect(&format!("etcd://127.0.0.1:{port}")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Connection {
                backend: "etcd",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(
        distsync::connect("etcd://").await.unwrap_err(),
        Error::InvalidUrl { .. }
    ));
}

#[tokio::test]
async fn the_backend_prefixes_its_namespace_and_keeps_sessions_alive() {
    let Some(url) = etcd_url() else { return };
    let namespace = unique("distsync-test-ns");
    let config = EtcdConfig::parse(&url).unwrap();
    let backend = distsync_etcd::backend(&format!(
        "etcd://{}/{namespace}",
        config.endpoints().join(",")
    ))
    .await
    .unwrap();
    assert_eq!(backend.namespace(), format!("{namespace}/"));
    let caps = backend.capabilities();
    assert_eq!(caps.backend, "etcd");
    assert!(caps.lock && caps.election && caps.stm() && caps.fencing && caps.linearizable);

    let error = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");

    // A session at the minimum TTL outlives several TTLs thanks to its keepalive.
    let ttl = distsync_etcd::MIN_SESSION_TTL;
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let lease = session.id().0 as i64;
    let key = format!("{namespace}/held");
    backend
        .kv()
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(&key, "v", lease)]))
        .await
        .unwrap();
    tokio::select! {
        () = session.lost() => panic!("the session was lost while being kept alive"),
        () = tokio::time::sleep(ttl * 3) => {}
    }
    assert_eq!(backend.kv().range(Range::key(&key)).await.unwrap().count, 1);

    // Revoked from the store side: the owner learns through lost().
    backend.revoke_session(session.id()).await.unwrap();
    within(ttl * 2, "lost() after a server-side revoke", session.lost()).await;
    assert_eq!(backend.kv().range(Range::key(&key)).await.unwrap().count, 0);
}
