//! The rate limiter on the server's message time stamps: two clients share one limit,
//! the key holds a stamped record (`<base µs> <added µs> <fingerprint>`) whose TAT is
//! kept against its message's own time stamp, another rate while the limiter is live
//! is a typed error, `status` reads the limiter, and a key holding anything else is
//! refused rather than overwritten.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use distsync_core::rate_limiter::Rate;
use distsync_core::raw::StampedTat;
use distsync_core::Error;

/// The bucket's key-value store through the NATS authors' client, to read and write
/// what the backend stores.
async fn raw_bucket(url: &str, bucket: &str) -> jetstream::kv::Store {
    let server = url.split_once("/?").map_or(url, |(server, _)| server);
    let client = async_nats::connect(server).await.expect("a raw client");
    jetstream::new(client)
        .get_key_value(bucket)
        .await
        .expect("the bucket")
}

/// Deletes the bucket `bucket` once a test is done with it.
async fn drop_bucket(url: &str, bucket: &str) {
    let server = url.split_once("/?").map_or(url, |(server, _)| server);
    let client = async_nats::connect(server).await.expect("a raw client");
    jetstream::new(client)
        .delete_stream(format!("KV_{bucket}"))
        .await
        .expect("deleting the bucket");
}

/// µs since the epoch on this machine's clock (the server runs beside it).
fn local_now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_a_burst_kept_against_the_servers_time_stamps() {
    let bucket = crate::common::unique_name("it-rate");
    let Some(url) = crate::common::url(bucket.as_str()) else {
        return;
    };
    let a = distsync::connect(&url).await.expect("connecting");
    let b = distsync::connect(&url).await.expect("connecting");
    let rate = Rate::new(3, Duration::from_secs(60)).unwrap();
    let first = a.rate_limiter("api", rate).unwrap();
    let second = b.rate_limiter("api", rate).unwrap();
    let before = local_now_us();
    assert!(first.try_acquire(2).await.unwrap().is_granted());
    assert!(second.try_acquire(1).await.unwrap().is_granted());
    // The burst of 3 is spent across both clients: the next permit is 20 s after the
    // first grant on the server's clock, less the time since.
    let wait = first.try_acquire(1).await.unwrap().retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert!(second.try_acquire(1).await.unwrap().retry_after().is_some());

    // The key holds the last grant's record: it read the first grant's TAT (its
    // message's stamp + 40 s) as its base and added 20 s, and JetStream stamped it.
    let raw = raw_bucket(&url, bucket.as_str()).await;
    let entry = raw
        .entry("ratelimit.api.=")
        .await
        .unwrap()
        .expect("the limiter's key");
    let record = StampedTat::parse(&entry.value).unwrap().expect("a record");
    assert_eq!(record.rate(), Some(rate));
    let stamp = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000).unwrap();
    let tat = record.tat_us(stamp);
    let after = local_now_us();
    // On loopback the server's clock is this machine's.
    assert!(
        tat >= before + 60_000_000 && tat <= after + 60_000_000,
        "TAT {tat}, this machine's time {before} before the grants and {after} after"
    );

    // Another rate while the limiter is live: a typed error, nothing counted.
    let other = Rate::new(10, Duration::from_secs(60)).unwrap();
    let refused = b.rate_limiter("api", other).unwrap().try_acquire(1).await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(why)) if why.contains(&rate.fingerprint())),
        "{refused:?}"
    );

    // Status reads the limiter: its rate, and its next permit due on the server's clock.
    let report = a.status("").await.unwrap();
    let [limiter] = report.rate_limiters.as_slice() else {
        panic!("one limiter: {:?}", report.rate_limiters);
    };
    assert_eq!((limiter.name.as_str(), limiter.rate), ("api", Some(rate)));
    let due = limiter.next_due.expect("a next due time");
    assert!(
        due > Duration::from_secs(10) && due <= Duration::from_secs(20),
        "{due:?}"
    );
    drop_bucket(&url, bucket.as_str()).await;
}

#[tokio::test]
async fn a_key_that_holds_no_limiter_is_refused_not_overwritten() {
    let bucket = crate::common::unique_name("it-rate-foreign");
    let Some(url) = crate::common::url(bucket.as_str()) else {
        return;
    };
    let coordinator = distsync::connect(&url).await.expect("connecting");
    let raw = raw_bucket(&url, bucket.as_str()).await;
    raw.put("ratelimit.api.=", "not a limiter".into())
        .await
        .unwrap();
    let rate = Rate::new(1, Duration::from_secs(1)).unwrap();
    let answer = coordinator
        .rate_limiter("api", rate)
        .unwrap()
        .try_acquire(1)
        .await;
    assert!(matches!(answer, Err(Error::Backend { .. })), "{answer:?}");
    let value = raw.get("ratelimit.api.=").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"not a limiter"[..]));
    drop_bucket(&url, bucket.as_str()).await;
}
