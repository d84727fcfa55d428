//! A transaction on the keys this process wrote on a lease skips its read: one batch
//! instead of two, and a wrong guess writes nothing and answers as the store does.

use std::time::Duration;

use bytes::Bytes;
use distsync_kv::kv::{Compare, CompareOp, Kv, LeaseId, Range, Txn, TxnOp, TxnResponse};
use distsync_mysql::MysqlKv;

use crate::common::*;

/// How long a prefix found taken is read rather than guessed (the backend's
/// `guesses::MISSED_FOR`, private to it).
const MISSED_FOR: Duration = Duration::from_secs(1);

/// How many transactions the one connection of `kv`'s pool (`pool_size=1`) has begun:
/// a read before the lock begins one, a locked batch another.
async fn begun(kv: &MysqlKv) -> i64 {
    let (_, count): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Com_begin'")
        .fetch_one(kv.pool())
        .await
        .unwrap();
    count.parse().unwrap()
}

/// How many transactions `txn` began on `kv`'s one connection, and its answer.
async fn begun_by(kv: &MysqlKv, txn: Txn) -> (i64, TxnResponse) {
    let before = begun(kv).await;
    let response = kv.txn(txn).await.unwrap();
    // The count's own statement begins nothing.
    (begun(kv).await - before, response)
}

/// Go's lock take: the key on the lease unless it is there, else its row.
fn take(key: &str, lease: LeaseId) -> Txn {
    Txn::when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key, Bytes::new(), lease)])
        .or_else(vec![TxnOp::Range(Range::key(key))])
}

/// A release: the key deleted if it is still the one created at `created`.
fn release(key: &str, created: i64) -> Txn {
    Txn::when(vec![Compare::create_revision(
        key,
        CompareOp::Equal,
        created,
    )])
    .and_then(vec![TxnOp::delete(key)])
}

#[tokio::test]
async fn a_take_and_a_release_of_a_sessions_key_are_one_batch_each() {
    let Some((kv, url)) = store("&pool_size=1").await else {
        return;
    };
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    for _ in 0..3 {
        let (batches, taken) = begun_by(&kv, take("lock/mine", lease)).await;
        assert!(taken.succeeded);
        assert_eq!(
            batches, 1,
            "a take of a key not there yet sends its batch at once"
        );
        let (batches, released) = begun_by(&kv, release("lock/mine", taken.revision)).await;
        assert!(released.succeeded);
        assert_eq!(
            batches, 1,
            "a release of a key this process wrote sends its batch at once"
        );
        assert!(get(&kv, "lock/mine").await.is_none());
    }
    // A key on no lease is read first: other processes write such keys.
    let (batches, _) = begun_by(
        &kv,
        Txn::when(vec![]).and_then(vec![TxnOp::put("shared", "1", 0)]),
    )
    .await;
    assert_eq!(batches, 2, "a write of shared data reads before it locks");
    drop_tables(&kv, &url).await;
}

#[tokio::test]
async fn a_wrong_guess_writes_nothing_and_answers_as_the_store() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let other = connect(&url).await;
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();

    // Deleted by another process: the release finds it gone.
    let taken = kv.txn(take("lock/a", lease)).await.unwrap();
    other
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::delete("lock/a")]))
        .await
        .unwrap();
    let released = kv.txn(release("lock/a", taken.revision)).await.unwrap();
    assert!(!released.succeeded, "the key this process wrote is gone");

    // Written again by another process: a compare on the old row fails, and the row
    // stays the other's.
    let written = kv.txn(take("lock/b", lease)).await.unwrap();
    other
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put("lock/b", "theirs", lease)]))
        .await
        .unwrap();
    let swapped = kv
        .txn(
            Txn::when(vec![Compare::mod_revision(
                "lock/b",
                CompareOp::Equal,
                written.revision,
            )])
            .and_then(vec![TxnOp::put("lock/b", "mine", lease)]),
        )
        .await
        .unwrap();
    assert!(
        !swapped.succeeded,
        "the row changed since this process wrote it"
    );
    assert_eq!(
        get(&kv, "lock/b").await.unwrap().value,
        Bytes::from("theirs")
    );

    // Created by another process before this one's first put: the take finds it.
    other.txn(take("lock/c", lease)).await.unwrap();
    let found = kv.txn(take("lock/c", lease)).await.unwrap();
    assert!(!found.succeeded, "the key was there");

    // The lease revoked: a put on it is refused, as without a guess.
    let gone = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    other.lease_revoke(gone).await.unwrap();
    let error = kv.txn(take("lock/d", gone)).await.unwrap_err();
    assert!(
        matches!(store_error(&error), distsync_kv::StoreError::LeaseNotFound(id) if *id == gone),
        "{error:?}"
    );
    assert!(get(&kv, "lock/d").await.is_none());
    drop_tables(&kv, &url).await;
}

/// The unfair lock's take: the own key on the lease when nobody is under `prefix`, else
/// the own key's row.
fn take_if_free(prefix: &str, key: &str, lease: LeaseId) -> Txn {
    Txn::when(vec![
        Compare::create_revision(prefix, CompareOp::Equal, 0).over_prefix()
    ])
    .and_then(vec![TxnOp::put(key, Bytes::new(), lease)])
    .or_else(vec![TxnOp::Range(Range::key(key))])
}

#[tokio::test]
async fn a_prefix_is_guessed_empty_until_a_guess_finds_it_taken() {
    let Some((kv, url)) = store("&pool_size=1").await else {
        return;
    };
    let other = connect(&url).await;
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let theirs = other.lease_grant(Duration::from_secs(30)).await.unwrap();

    let (batches, taken) = begun_by(&kv, take_if_free("free/", "free/mine", lease)).await;
    assert!(taken.succeeded);
    assert_eq!(batches, 1, "nobody under the prefix: the guess holds");

    other
        .txn(take_if_free("busy/", "busy/theirs", theirs))
        .await
        .unwrap();
    let sent = std::time::Instant::now();
    let (batches, refused) = begun_by(&kv, take_if_free("busy/", "busy/mine", lease)).await;
    assert!(!refused.succeeded, "another holds the prefix");
    assert!(
        get(&kv, "busy/mine").await.is_none(),
        "the wrong guess wrote nothing"
    );
    assert_eq!(
        batches, 3,
        "the wrong guess's batch, then the read and the refused branch's check"
    );
    // The mark is set between `sent` and here.
    let mut marked_by = std::time::Instant::now();
    let (batches, again) = begun_by(&kv, take_if_free("busy/", "busy/mine", lease)).await;
    assert!(!again.succeeded);
    // Only a take that surely looked within the mark's time is bound to read: a loaded
    // machine may push it past the mark.
    if sent.elapsed() < MISSED_FOR {
        assert_eq!(batches, 2, "a prefix just found taken is read, not guessed");
    } else if batches == 3 {
        // It guessed, wrongly again: a new mark.
        marked_by = std::time::Instant::now();
    }
    // Once the mark lapses the prefix is guessed again (and found taken again).
    tokio::time::sleep(MISSED_FOR.saturating_sub(marked_by.elapsed())).await;
    let (batches, lapsed) = begun_by(&kv, take_if_free("busy/", "busy/mine", lease)).await;
    assert!(!lapsed.succeeded);
    assert_eq!(
        batches, 3,
        "a mark older than its time: the prefix is guessed again"
    );
    drop_tables(&kv, &url).await;
}
