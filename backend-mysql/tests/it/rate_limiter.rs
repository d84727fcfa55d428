//! The rate limiter on the server's clock: two clients (two backends, two pools) share
//! one limit, the key holds the theoretical arrival time on the server's clock, and
//! another rate while the limiter is live is a typed error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_core::rate_limiter::Rate;
use distsync_core::Error;
use distsync_kv::kv::Kv;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_is_the_servers_in_microseconds_since_the_epoch() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let first = kv.clock().await.unwrap().expect("the server has a clock");
    let other = connect(&url).await;
    let second = other
        .clock()
        .await
        .unwrap()
        .expect("the server has a clock");
    assert!(second >= first, "{second:?} before {first:?}");
    // The server runs beside the tests: a unit or epoch mistake is off by years, a
    // skewed machine clock by far less than an hour.
    let here = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let apart = here.abs_diff(second);
    assert!(apart < Duration::from_secs(3600), "{apart:?} apart");
    drop_tables(&kv, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_one_limit_and_another_rate_is_a_typed_error() {
    let Some((kv, url, a, b)) = two_clients().await else {
        return;
    };
    let rate = Rate::new(3, Duration::from_secs(60)).unwrap();
    let first = a.rate_limiter("api", rate).unwrap();
    let second = b.rate_limiter("api", rate).unwrap();
    assert!(first.try_acquire(2).await.unwrap().is_granted());
    assert!(second.try_acquire(1).await.unwrap().is_granted());
    // The burst of 3 is spent across both clients: the next permit is ~20 s away on
    // the server's clock (less the time the grants took).
    let wait = first.try_acquire(1).await.unwrap().retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert!(second.try_acquire(1).await.unwrap().retry_after().is_some());

    // The key holds `<tat µs> <fingerprint>`, the TAT 60 s (3 permits of 20 s) past the
    // server's time of the first grant, which is behind the server's time now.
    let stored = get(&kv, "/ratelimit/api").await.unwrap();
    let text = String::from_utf8(stored.value.to_vec()).unwrap();
    let (tat, fingerprint) = text.split_once(' ').unwrap();
    assert_eq!(fingerprint, rate.fingerprint());
    let tat = Duration::from_micros(tat.parse().unwrap());
    let now = kv.clock().await.unwrap().unwrap();
    assert!(
        tat > now + Duration::from_secs(55) && tat <= now + Duration::from_secs(60),
        "TAT {tat:?}, server time {now:?}"
    );

    // Another rate while the limiter is live (told by the stored fingerprint): a typed
    // error, and nothing counted. Requests that no rate admits (zero permits, more than
    // the burst) are refused by core before the store is asked.
    let other = b
        .rate_limiter("api", Rate::new(5, Duration::from_secs(60)).unwrap())
        .unwrap();
    let refused = other.try_acquire(1).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    assert_eq!(get(&kv, "/ratelimit/api").await.unwrap(), stored);

    // Another name is another limiter.
    let fresh = a.rate_limiter("api/other", rate).unwrap();
    assert!(fresh.try_acquire(3).await.unwrap().is_granted());
    drop_tables(&kv, &url).await;
}
