//! Revisions, versions, compares, branches and ranges, as etcd's.

use bytes::Bytes;
use distsync_core::Error;
use distsync_kv::kv::{
    Compare, CompareOp, Kv, Range, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use distsync_kv::StoreError;

use crate::common::*;

#[tokio::test]
async fn revisions_and_versions_follow_etcd() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    assert_eq!(kv.range(Range::prefix("")).await.unwrap().revision, 1);
    assert_eq!(put_one(&kv, "a", "1").await, 2);
    let a = get(&kv, "a").await.unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, a.lease),
        (2, 2, 1, 0)
    );
    assert_eq!(a.value, Bytes::from("1"));
    assert_eq!(put_one(&kv, "a", "2").await, 3);
    let a = get(&kv, "a").await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    let deleted = kv
        .txn(Txn::default().and_then(vec![TxnOp::delete("a")]))
        .await
        .unwrap();
    assert_eq!(deleted.revision, 4);
    assert_eq!(deleted.responses, vec![TxnOpResponse::Delete(1)]);
    assert!(get(&kv, "a").await.is_none());
    // Recreated: a new life, version 1.
    assert_eq!(put_one(&kv, "a", "3").await, 5);
    let a = get(&kv, "a").await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    // A transaction that changes nothing keeps the revision.
    let nothing = kv
        .txn(Txn::default().and_then(vec![
            TxnOp::delete("missing"),
            TxnOp::Range(Range::prefix("")),
        ]))
        .await
        .unwrap();
    assert_eq!(nothing.revision, 5);
    assert_eq!(nothing.responses[0], TxnOpResponse::Delete(0));
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn compares_choose_the_branch_and_missing_keys_are_zero() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let create_if_absent = |value: &str| {
        Txn::when(vec![Compare::create_revision("k", CompareOp::Equal, 0)])
            .and_then(vec![put("k", value)])
            .or_else(vec![TxnOp::Range(Range::key("k"))])
    };
    let first = kv.txn(create_if_absent("first")).await.unwrap();
    assert!(first.succeeded);
    let second = kv.txn(create_if_absent("second")).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, 2);
    assert_eq!(second.range(0).unwrap().kvs[0].value, Bytes::from("first"));
    let checks = [
        (Compare::version("k", CompareOp::Equal, 1), true),
        (Compare::version("k", CompareOp::Greater, 1), false),
        (Compare::mod_revision("k", CompareOp::Less, 3), true),
        (Compare::mod_revision("k", CompareOp::NotEqual, 2), false),
        (Compare::create_revision("k", CompareOp::Greater, 1), true),
        (Compare::version("none", CompareOp::Equal, 0), true),
        (Compare::mod_revision("none", CompareOp::Less, 1), true),
        (
            Compare::create_revision("none", CompareOp::Greater, 0),
            false,
        ),
    ];
    for (compare, expected) in checks {
        let response = kv.txn(Txn::when(vec![compare.clone()])).await.unwrap();
        assert_eq!(response.succeeded, expected, "{compare:?}");
    }
    let both = kv
        .txn(Txn::when(vec![
            Compare::version("k", CompareOp::Equal, 1),
            Compare::version("k", CompareOp::Equal, 2),
        ]))
        .await
        .unwrap();
    assert!(!both.succeeded);
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn a_branch_sees_its_own_writes_under_one_revision() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    put_one(&kv, "q/old", "x").await;
    let response = kv
        .txn(Txn::default().and_then(vec![
            TxnOp::Range(Range::prefix("q/")),
            put("q/new", "y"),
            TxnOp::Range(Range::prefix("q/")),
            TxnOp::Delete {
                key: "q/old".to_owned(),
                prefix: false,
            },
            TxnOp::Range(Range::prefix("q/")),
        ]))
        .await
        .unwrap();
    assert_eq!(response.revision, 3);
    assert_eq!(keys(response.range(0).unwrap()), ["q/old"]);
    assert_eq!(keys(response.range(2).unwrap()), ["q/new", "q/old"]);
    assert_eq!(response.range(2).unwrap().kvs[0].mod_revision, 3);
    assert_eq!(keys(response.range(4).unwrap()), ["q/new"]);
    assert_eq!(response.range(0).unwrap().revision, 3);
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn invalid_transactions_fail_typed_and_apply_nothing() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    put_one(&kv, "a", "1").await;
    let unknown_lease = kv
        .txn(Txn::default().and_then(vec![put("b", "1"), TxnOp::put("c", "1", 42)]))
        .await
        .unwrap_err();
    assert_eq!(store_error(&unknown_lease), &StoreError::LeaseNotFound(42));
    assert!(get(&kv, "b").await.is_none());
    let keep_lease_of_missing = kv
        .txn(Txn::default().and_then(vec![TxnOp::put_ignore_lease("missing", "1")]))
        .await
        .unwrap_err();
    assert_eq!(
        store_error(&keep_lease_of_missing),
        &StoreError::KeyNotFound("missing".to_owned())
    );
    let empty = kv
        .txn(Txn::default().and_then(vec![put("", "1")]))
        .await
        .unwrap_err();
    assert!(matches!(empty, Error::InvalidArgument(_)), "{empty:?}");
    assert!(matches!(
        kv.range(Range::key("")).await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    let future = kv.range(Range::key("a").at_revision(9)).await.unwrap_err();
    assert_eq!(
        store_error(&future),
        &StoreError::FutureRevision {
            requested: 9,
            current: 2
        }
    );
    assert_eq!(kv.range(Range::prefix("")).await.unwrap().revision, 2);
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn ranges_sort_limit_count_and_bound_as_etcd() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    put_one(&kv, "p/b", "1").await; // 2
    put_one(&kv, "p/a", "1").await; // 3
    put_one(&kv, "p/c", "1").await; // 4
    put_one(&kv, "p/b", "2").await; // 5
    put_one(&kv, "other", "1").await; // 6
    let all = kv.range(Range::prefix("p/")).await.unwrap();
    assert_eq!(keys(&all), ["p/a", "p/b", "p/c"]);
    assert_eq!((all.count, all.revision), (3, 6));
    let first = kv.range(Range::prefix("p/").first_create()).await.unwrap();
    assert_eq!((keys(&first), first.count), (vec!["p/b"], 3));
    assert_eq!(
        keys(&kv.range(Range::prefix("p/").last_create()).await.unwrap()),
        ["p/c"]
    );
    assert_eq!(
        keys(&kv.range(Range::prefix("p/").first_rev()).await.unwrap()),
        ["p/a"]
    );
    assert_eq!(
        keys(&kv.range(Range::prefix("p/").last_rev()).await.unwrap()),
        ["p/b"]
    );
    assert_eq!(
        keys(&kv.range(Range::prefix("p/").last_key()).await.unwrap()),
        ["p/c"]
    );
    let by_mod = kv
        .range(Range::prefix("p/").sorted(SortTarget::ModRevision, SortOrder::Descend, 2))
        .await
        .unwrap();
    assert_eq!((keys(&by_mod), by_mod.count), (vec!["p/b", "p/c"], 3));
    let before_c = kv
        .range(Range::prefix("p/").last_create().max_create_revision(3))
        .await
        .unwrap();
    assert_eq!(keys(&before_c), ["p/a"]);
    let unmodified = kv
        .range(Range::prefix("p/").max_mod_revision(4))
        .await
        .unwrap();
    assert_eq!(
        (keys(&unmodified), unmodified.count),
        (vec!["p/a", "p/c"], 3)
    );
    let between = kv.range(Range::between("p/a", "p/c")).await.unwrap();
    assert_eq!(keys(&between), ["p/a", "p/b"]);
    assert_eq!(
        keys(&kv.range(Range::prefix("")).await.unwrap()),
        ["other", "p/a", "p/b", "p/c"]
    );
    // Past revisions: exact per key.
    let at = |revision| kv.range(Range::prefix("p/").at_revision(revision));
    assert!(at(1).await.unwrap().kvs.is_empty());
    let four = at(4).await.unwrap();
    assert_eq!(keys(&four), ["p/a", "p/b", "p/c"]);
    assert_eq!(
        (four.kvs[1].value.clone(), four.kvs[1].version),
        (Bytes::from("1"), 1)
    );
    assert_eq!(four.revision, 6, "the header carries the current revision");
    let first_at_four = at(4).await.unwrap();
    assert_eq!(first_at_four.count, 3);
    drop_tables(&kv, &url).await;
}

/// Writers from two clients, each a compare-and-swap loop on one counter: commits in
/// revision order and compares under the revision lock lose no increment.
#[tokio::test]
async fn concurrent_compare_and_swaps_lose_nothing() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let other = connect(&url).await;
    put_one(&kv, "n", "0").await;
    tokio::join!(increments(&kv), increments(&other), increments(&kv));
    let n = get(&kv, "n").await.unwrap();
    assert_eq!(n.value, Bytes::from("75"));
    assert_eq!(n.version, 76);
    drop_tables(&kv, &url).await;
}

/// 25 increments of `n` by compare-and-swap.
async fn increments(kv: &distsync_mysql::MysqlKv) {
    let mut done = 0;
    while done < 25 {
        let current = get(kv, "n").await.unwrap();
        let value: u64 = std::str::from_utf8(&current.value)
            .unwrap()
            .parse()
            .unwrap();
        let swapped = kv
            .txn(
                Txn::when(vec![Compare::mod_revision(
                    "n",
                    CompareOp::Equal,
                    current.mod_revision,
                )])
                .and_then(vec![put("n", &(value + 1).to_string())]),
            )
            .await
            .unwrap();
        if swapped.succeeded {
            done += 1;
        }
    }
}

/// Prefix deletes from one client racing puts of new keys under the prefix from
/// four others: every key put is either counted by exactly one delete or still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_deletes_racing_puts_count_every_key_once() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = connect(&url).await;
        writers.push(tokio::spawn(async move {
            for i in 0..PUTS {
                put_one(&client, &format!("p/{writer}/{i}"), "v").await;
            }
        }));
    }
    let mut deleted = 0;
    while writers.iter().any(|writer| !writer.is_finished()) {
        let response = kv
            .txn(Txn::default().and_then(vec![TxnOp::Delete {
                key: "p/".to_owned(),
                prefix: true,
            }]))
            .await
            .unwrap();
        if let TxnOpResponse::Delete(count) = response.responses[0] {
            deleted += count;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let left = kv.range(Range::prefix("p/")).await.unwrap().count;
    assert_eq!(deleted + i64::try_from(left).unwrap(), 4 * PUTS);
    drop_tables(&kv, &url).await;
}

/// How many keys each writer of [`prefix_deletes_racing_puts_count_every_key_once`] puts.
const PUTS: i64 = 100;
