//! The [`Kv`] contract as checks any store runs: revisions, versions, compares,
//! branches, typed refusals and ranges exactly as etcd gives them, which the recipes
//! rely on. Each check starts on an empty store (revision 1) of its own and panics
//! with what differs; a store's tests call them (the memory store's unit tests, the
//! MySQL store's integration tests against a server).
//!
//! Behind the feature `contract-tests`: test support, not part of what a store's
//! users call.

use bytes::Bytes;
use distsync_core::Error;

use crate::kv::{
    Compare, CompareOp, EventKind, KeyValue, Kv, Range, RangeResponse, Revision, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchResponse,
};
use crate::StoreError;

/// A put of `value` at `key`, without a lease.
pub fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::put(key, value.to_owned(), 0)
}

/// Puts `value` at `key` in a transaction of its own; the revision it made.
///
/// # Panics
/// When the store refuses it.
pub async fn put_one<K: Kv + ?Sized>(kv: &K, key: &str, value: &str) -> Revision {
    kv.txn(Txn::default().and_then(vec![put(key, value)]))
        .await
        .unwrap()
        .revision
}

/// The key-value at `key`, if any.
///
/// # Panics
/// When the store refuses the read.
pub async fn get<K: Kv + ?Sized>(kv: &K, key: &str) -> Option<KeyValue> {
    kv.range(Range::key(key))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

/// The keys a range answered, in its order.
pub fn keys(response: &RangeResponse) -> Vec<&str> {
    response.kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// The store's own error inside `error`, a [`Error::Backend`] of `backend`.
///
/// # Panics
/// When `error` is anything else.
pub fn store_error<'e>(error: &'e Error, backend: &str) -> &'e StoreError {
    match error {
        Error::Backend {
            backend: named,
            source,
        } => {
            assert_eq!(*named, backend);
            source.downcast_ref::<StoreError>().unwrap()
        }
        other => panic!("expected a {backend} store error, got {other:?}"),
    }
}

/// The events of a watch answer as (kind, key, revision).
///
/// # Panics
/// When the answer is not events.
pub fn events(response: WatchResponse) -> Vec<(EventKind, String, Revision)> {
    match response {
        WatchResponse::Events(events) => events
            .into_iter()
            .map(|event| (event.kind, event.kv.key, event.kv.mod_revision))
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

/// The store's current revision, from a range's header.
async fn revision<K: Kv + ?Sized>(kv: &K) -> Revision {
    kv.range(Range::prefix("")).await.unwrap().revision
}

/// An empty store is at revision 1, which is readable; each write is a revision; a key's
/// create revision, mod revision and version follow etcd, a recreated key starting a
/// new life at version 1.
///
/// # Panics
/// On the first difference.
pub async fn revisions_and_versions_follow_etcd<K: Kv + ?Sized>(kv: &K) {
    let empty = kv.range(Range::prefix("")).await.unwrap();
    assert_eq!((empty.revision, empty.count), (1, 0));
    assert!(empty.kvs.is_empty());
    kv.range(Range::prefix("").at_revision(1)).await.unwrap();
    assert_eq!(put_one(kv, "a", "1").await, 2);
    let a = get(kv, "a").await.unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, a.lease),
        (2, 2, 1, 0)
    );
    assert_eq!(a.value, Bytes::from("1"));
    assert_eq!(put_one(kv, "a", "2").await, 3);
    let a = get(kv, "a").await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    let deleted = kv
        .txn(Txn::default().and_then(vec![TxnOp::delete("a")]))
        .await
        .unwrap();
    assert_eq!(deleted.revision, 4);
    assert_eq!(deleted.responses, vec![TxnOpResponse::Delete(1)]);
    assert!(get(kv, "a").await.is_none());
    // Recreated: a new life, version 1.
    assert_eq!(put_one(kv, "a", "3").await, 5);
    let a = get(kv, "a").await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
}

/// One transaction is one revision however many keys it writes; one that changes
/// nothing (reads, deletes of missing keys) makes none.
///
/// # Panics
/// On the first difference.
pub async fn one_txn_is_one_revision_and_no_change_is_no_revision<K: Kv + ?Sized>(kv: &K) {
    let response = kv
        .txn(Txn::default().and_then(vec![put("a", "1"), put("b", "1")]))
        .await
        .unwrap();
    assert_eq!(response.revision, 2);
    assert_eq!(get(kv, "a").await.unwrap().mod_revision, 2);
    assert_eq!(get(kv, "b").await.unwrap().mod_revision, 2);
    let nothing = kv
        .txn(Txn::default().and_then(vec![
            TxnOp::delete("missing"),
            TxnOp::Range(Range::prefix("")),
        ]))
        .await
        .unwrap();
    assert_eq!(nothing.revision, 2);
    assert_eq!(nothing.responses[0], TxnOpResponse::Delete(0));
    assert_eq!(nothing.range(1).unwrap().count, 2);
    assert_eq!(revision(kv).await, 2);
}

/// Compares choose the branch (all must hold), every target and operator on an
/// existing key and on a missing one, whose revisions and version read as zero.
///
/// # Panics
/// On the first difference.
pub async fn compares_choose_the_branch_and_missing_keys_are_zero<K: Kv + ?Sized>(kv: &K) {
    let create_if_absent = |value: &str| {
        Txn::when(vec![Compare::create_revision("k", CompareOp::Equal, 0)])
            .and_then(vec![put("k", value)])
            .or_else(vec![TxnOp::Range(Range::key("k"))])
    };
    let first = kv.txn(create_if_absent("first")).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.responses, vec![TxnOpResponse::Put]);
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
}

/// A compare over a prefix holds when it holds for every live key under the prefix,
/// or, with none there, for a missing key (as etcd's compare with a range end): so a
/// put guarded by `create_revision == 0` over a prefix lands only in an empty range,
/// and a refused one writes nothing (no revision). Keys beside the prefix and deleted
/// keys do not count. Every key is under `root`, which a store shared with other tests
/// makes unique; the checks then read no absolute revision. Only with an empty `root`
/// (a store of the check's own) does it also check that a refused take made no revision
/// of the whole store, which other tests on a shared store move.
///
/// # Panics
/// On the first difference.
pub async fn compares_over_a_prefix_hold_for_every_key_under_it<K: Kv + ?Sized>(
    kv: &K,
    root: &str,
) {
    let line = format!("{root}line/");
    let key = |name: &str| format!("{line}{name}");
    let empty = || Compare::create_revision(line.as_str(), CompareOp::Equal, 0).over_prefix();
    let take = |name: &str| {
        Txn::when(vec![empty()])
            .and_then(vec![put(&key(name), name)])
            .or_else(vec![TxnOp::Range(Range::prefix(line.as_str()))])
    };
    put_one(kv, &format!("{root}line"), "beside").await;
    put_one(kv, &format!("{root}linez"), "beside").await;
    let first = kv.txn(take("a")).await.unwrap();
    assert!(first.succeeded, "keys beside the prefix count");
    let second = kv.txn(take("b")).await.unwrap();
    assert!(!second.succeeded, "a key under the prefix is not counted");
    let written_since = kv
        .range(Range::prefix(format!("{root}line")))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .filter(|kv| kv.mod_revision > first.revision)
        .count();
    assert_eq!(written_since, 0, "a refused take wrote");
    if root.is_empty() {
        assert_eq!(
            second.revision, first.revision,
            "a refused take made a revision"
        );
    }
    assert_eq!(keys(second.range(0).unwrap()), [key("a")]);
    assert!(get(kv, &key("b")).await.is_none());

    put_one(kv, &key("b"), "b").await;
    let rewritten = put_one(kv, &key("a"), "a2").await;
    let holds = |compare: Compare| async move {
        kv.txn(Txn::when(vec![compare.over_prefix()]))
            .await
            .unwrap()
            .succeeded
    };
    let line = line.as_str();
    let checks = [
        (Compare::create_revision(line, CompareOp::Greater, 0), true),
        (Compare::version(line, CompareOp::Greater, 0), true),
        (Compare::version(line, CompareOp::Equal, 1), false),
        (Compare::version(line, CompareOp::Equal, 2), false),
        (
            Compare::mod_revision(line, CompareOp::Less, rewritten + 1),
            true,
        ),
        (
            Compare::mod_revision(line, CompareOp::Less, rewritten),
            false,
        ),
        (Compare::create_revision(line, CompareOp::NotEqual, 0), true),
    ];
    for (compare, expected) in checks {
        assert_eq!(
            holds(compare.clone()).await,
            expected,
            "{compare:?} over the prefix"
        );
    }
    let nothing = format!("{root}nothing/");
    assert!(holds(Compare::version(nothing.as_str(), CompareOp::Equal, 0)).await);
    assert!(!holds(Compare::version(nothing.as_str(), CompareOp::Greater, 0)).await);

    let delete_line = TxnOp::Delete {
        key: line.to_owned(),
        prefix: true,
    };
    kv.txn(Txn::default().and_then(vec![delete_line]))
        .await
        .unwrap();
    assert!(
        holds(Compare::create_revision(line, CompareOp::Equal, 0)).await,
        "deleted keys count"
    );
    let third = kv.txn(take("c")).await.unwrap();
    assert!(third.succeeded);
    assert_eq!(
        get(kv, &key("c")).await.unwrap().create_revision,
        third.revision
    );
}

/// A branch's ranges see its earlier writes, all under the transaction's one
/// revision, which inner ranges carry as their header.
///
/// # Panics
/// On the first difference.
pub async fn a_branch_sees_its_own_writes_under_one_revision<K: Kv + ?Sized>(kv: &K) {
    put_one(kv, "q/old", "x").await;
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
}

/// Invalid transactions fail with typed errors and apply nothing: an unknown lease, a
/// key put twice in one branch (either branch, whichever runs), a prefix delete over
/// a key the branch puts, an empty key, keeping the lease of a missing key, a read of
/// a future revision. `backend` is the store's name in its errors.
///
/// # Panics
/// On the first difference.
pub async fn invalid_transactions_fail_typed_and_apply_nothing<K: Kv + ?Sized>(
    kv: &K,
    backend: &str,
) {
    put_one(kv, "a", "1").await;
    let unknown_lease = kv
        .txn(Txn::default().and_then(vec![put("b", "1"), TxnOp::put("c", "1", 42)]))
        .await
        .unwrap_err();
    assert_eq!(
        store_error(&unknown_lease, backend),
        &StoreError::LeaseNotFound(42)
    );
    assert!(get(kv, "b").await.is_none());
    let duplicate = kv
        .txn(Txn::default().and_then(vec![put("b", "1"), put("b", "2")]))
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, Error::InvalidArgument(_)),
        "{duplicate:?}"
    );
    let overlapping = kv
        .txn(Txn::default().and_then(vec![
            put("p/x", "1"),
            TxnOp::Delete {
                key: "p/".to_owned(),
                prefix: true,
            },
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(overlapping, Error::InvalidArgument(_)),
        "{overlapping:?}"
    );
    // The failure branch is checked too, even when the success branch runs.
    let bad_failure_branch = Txn::default()
        .and_then(vec![put("b", "1")])
        .or_else(vec![put("c", "1"), put("c", "1")]);
    assert!(kv.txn(bad_failure_branch).await.is_err());
    let empty = kv
        .txn(Txn::default().and_then(vec![put("", "1")]))
        .await
        .unwrap_err();
    assert!(matches!(empty, Error::InvalidArgument(_)), "{empty:?}");
    assert!(matches!(
        kv.range(Range::key("")).await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    let keep_lease_of_missing = kv
        .txn(Txn::default().and_then(vec![TxnOp::put_ignore_lease("missing", "1")]))
        .await
        .unwrap_err();
    assert_eq!(
        store_error(&keep_lease_of_missing, backend),
        &StoreError::KeyNotFound("missing".to_owned())
    );
    let future = kv.range(Range::key("a").at_revision(9)).await.unwrap_err();
    assert_eq!(
        store_error(&future, backend),
        &StoreError::FutureRevision {
            requested: 9,
            current: 2
        }
    );
    assert_eq!(revision(kv).await, 2);
    assert_eq!(get(kv, "a").await.unwrap().value, Bytes::from("1"));
}

/// Ranges sort, limit, count and bound as etcd's: the sort targets and orders, a count
/// that ignores the limit and the max-revision filters, a limit of 0 as no limit,
/// key intervals, and reads at past revisions exact per key with the current revision
/// in their header.
///
/// # Panics
/// On the first difference.
pub async fn ranges_sort_limit_count_and_bound_as_etcd<K: Kv + ?Sized>(kv: &K) {
    put_one(kv, "p/b", "1").await; // 2
    put_one(kv, "p/a", "1").await; // 3
    put_one(kv, "p/c", "1").await; // 4
    put_one(kv, "p/b", "2").await; // 5
    put_one(kv, "other", "1").await; // 6
    let all = kv.range(Range::prefix("p/")).await.unwrap();
    assert_eq!(keys(&all), ["p/a", "p/b", "p/c"]);
    assert_eq!((all.count, all.revision), (3, 6));
    let first = kv.range(Range::prefix("p/").first_create()).await.unwrap();
    assert_eq!((keys(&first), first.count), (vec!["p/b"], 3));
    let read = |range: Range| async move { kv.range(range).await.unwrap() };
    assert_eq!(
        keys(&read(Range::prefix("p/").last_create()).await),
        ["p/c"]
    );
    assert_eq!(keys(&read(Range::prefix("p/").first_rev()).await), ["p/a"]);
    assert_eq!(keys(&read(Range::prefix("p/").last_rev()).await), ["p/b"]);
    assert_eq!(keys(&read(Range::prefix("p/").last_key()).await), ["p/c"]);
    assert_eq!(keys(&read(Range::prefix("p/").first_key()).await), ["p/a"]);
    let by_mod =
        read(Range::prefix("p/").sorted(SortTarget::ModRevision, SortOrder::Descend, 2)).await;
    assert_eq!((keys(&by_mod), by_mod.count), (vec!["p/b", "p/c"], 3));
    // Go's lock wait: the key created last before mine (here: before revision 4).
    let before_c = read(Range::prefix("p/").last_create().max_create_revision(3)).await;
    assert_eq!(keys(&before_c), ["p/a"]);
    // etcd's count ignores the max-revision filters.
    let unmodified = read(Range::prefix("p/").max_mod_revision(4)).await;
    assert_eq!(
        (keys(&unmodified), unmodified.count),
        (vec!["p/a", "p/c"], 3)
    );
    // A limit of 0 is no limit.
    let mut unlimited = Range::prefix("p/");
    unlimited.limit = Some(0);
    assert_eq!(read(unlimited).await.kvs.len(), 3);
    assert_eq!(
        keys(&read(Range::between("p/a", "p/c")).await),
        ["p/a", "p/b"]
    );
    assert_eq!(
        keys(&read(Range::prefix("")).await),
        ["other", "p/a", "p/b", "p/c"]
    );
    // Past revisions: exact per key.
    let at = |revision| read(Range::prefix("p/").at_revision(revision));
    assert!(at(1).await.kvs.is_empty());
    let four = at(4).await;
    assert_eq!(keys(&four), ["p/a", "p/b", "p/c"]);
    assert_eq!(
        (four.kvs[1].value.clone(), four.kvs[1].version),
        (Bytes::from("1"), 1)
    );
    assert_eq!(four.revision, 6, "the header carries the current revision");
    assert_eq!(four.count, 3);
}
