//! The rate limiter's one-statement decision: two clients (two backends, two pools)
//! share one limit on the server's clock, the row holds the recipes' `<tat µs> <rate
//! fingerprint>` outside the revision order, another rate while the limiter is live is
//! a typed error, and `status` and `purge` read and remove the row as any.

use std::time::Duration;

use distsync_core::rate_limiter::Rate;
use distsync_core::{Error, Name};
use distsync_kv::kv::{Kv, Range};
use distsync_mysql::MysqlKv;

use crate::common::*;

/// The limiter `api`'s row, under the empty namespace.
const KEY: &str = "/ratelimit/api";

/// The store's revision, as a range answers it.
async fn revision(kv: &MysqlKv) -> i64 {
    kv.range(Range::key(KEY)).await.unwrap().revision
}

/// How many rows of `key` the history (`log`) table holds.
async fn history(kv: &MysqlKv, url: &str, key: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {} WHERE k = ?",
        table(url, "log")
    ))
    .bind(key.as_bytes())
    .fetch_one(kv.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_statement_decides_on_the_servers_clock_outside_the_revisions() {
    let Some((kv, url, a, b)) = two_clients().await else {
        return;
    };
    let rate = Rate::new(3, Duration::from_secs(60)).unwrap();
    let first = a.rate_limiter("api", rate).unwrap();
    let second = b.rate_limiter("api", rate).unwrap();
    let at_start = revision(&kv).await;
    let before = kv.clock().await.unwrap().unwrap();
    assert!(first.try_acquire(2).await.unwrap().is_granted());
    assert!(second.try_acquire(1).await.unwrap().is_granted());
    // The burst of 3 is spent across both clients: the next permit is 20 s after the
    // first grant on the server's clock, less the time since.
    let wait = first.try_acquire(1).await.unwrap().retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(20) - PATIENCE && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert!(second.try_acquire(1).await.unwrap().retry_after().is_some());

    // The row holds `<tat µs> <fingerprint>`, the TAT 60 s (3 permits of 20 s) past the
    // server's time of the first grant.
    let stored = get(&kv, KEY).await.unwrap();
    let text = String::from_utf8(stored.value.to_vec()).unwrap();
    let (tat, fingerprint) = text.split_once(' ').unwrap();
    assert_eq!(fingerprint, rate.fingerprint());
    let tat = Duration::from_micros(tat.parse().unwrap());
    let now = kv.clock().await.unwrap().unwrap();
    assert!(
        tat >= before + Duration::from_secs(60) && tat <= now + Duration::from_secs(60),
        "TAT {tat:?}, server time {before:?} before the grants and {now:?} after"
    );
    // Outside the revision order: revisions 1 (not 0: present), no lease, no history,
    // and the store's revision as it was.
    assert_eq!(
        (
            stored.create_revision,
            stored.mod_revision,
            stored.version,
            stored.lease
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(history(&kv, &url, KEY).await, 0);
    assert_eq!(revision(&kv).await, at_start);

    // Another rate while the limiter is live (told by the stored fingerprint): a typed
    // error naming both rates, and nothing counted.
    let other_rate = Rate::new(5, Duration::from_secs(60)).unwrap();
    let other = b.rate_limiter("api", other_rate).unwrap();
    let refused = other.try_acquire(1).await.unwrap_err();
    let Error::InvalidArgument(message) = &refused else {
        panic!("{refused:?}");
    };
    assert!(
        message.contains(&rate.fingerprint()) && message.contains(&other_rate.fingerprint()),
        "{message}"
    );
    assert_eq!(get(&kv, KEY).await.unwrap(), stored);

    // `status` reads the row as the recipes write it, on the server's clock.
    let report = b.status("api").await.unwrap();
    let limiter = report
        .rate_limiters
        .iter()
        .find(|limiter| limiter.name == "api")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert_eq!(limiter.rate, Some(rate));
    let due = limiter.next_due.unwrap();
    assert!(due > Duration::ZERO && due <= wait, "{due:?}");

    // A purge deletes the row through the revision row (a tombstone in the log), and
    // the next request finds an idle limiter: a fresh burst.
    let purged = a
        .backend()
        .purge_prefix(&Name::new("api").unwrap())
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(get(&kv, KEY).await, None);
    assert_eq!(history(&kv, &url, KEY).await, 1);
    assert!(second.try_acquire(3).await.unwrap().is_granted());

    // Another name is another limiter.
    let fresh = a.rate_limiter("api/other", rate).unwrap();
    assert!(fresh.try_acquire(3).await.unwrap().is_granted());
    drop_tables(&kv, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_longer_than_the_servers_arithmetic_is_decided() {
    let Some((kv, url, a, _)) = two_clients().await else {
        return;
    };
    // A permit a year in bursts of 2^32 − 1: the burst spans 4 billion years, past
    // a signed BIGINT of µs. The statement caps the spans, which only refuses more.
    let year = Duration::from_secs(365 * 24 * 3600);
    let rate = Rate::new(1, year).unwrap().with_burst(u32::MAX).unwrap();
    let limiter = a.rate_limiter("huge", rate).unwrap();
    assert!(limiter.try_acquire(u32::MAX).await.unwrap().is_granted());
    let wait = limiter.try_acquire(1).await.unwrap().retry_after().unwrap();
    assert!(wait > year - PATIENCE && wait <= year, "{wait:?}");
    drop_tables(&kv, &url).await;
}
