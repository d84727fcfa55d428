//! The rate limiter against a real ZooKeeper (`DISTSYNC_ZOOKEEPER_URL`; skipped loudly
//! when unset, a failure under `CI=true`): two clients share one limit, the node's
//! layout is the one docs/ZOOKEEPER.md gives, and bad input is a typed error.

use std::time::Duration;

use distsync_core::rate_limiter::Rate;
use distsync_core::{Coordinator, Error};
use distsync_zookeeper::ZkConfig;
use zookeeper_client as zk;

/// Two clients (two ZooKeeper sessions) of the same servers, the URL's config, and a
/// name no other run uses.
async fn clients() -> Option<(Coordinator, Coordinator, ZkConfig, String)> {
    let url = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some((
        distsync::connect(&url).await.unwrap(),
        distsync::connect(&url).await.unwrap(),
        url.parse().unwrap(),
        format!("rate-limiter-test-{}-{nanos}", std::process::id()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_the_limit_and_other_rates_are_refused() {
    let Some((a, b, config, name)) = clients().await else {
        return;
    };
    let rate = Rate::new(3, Duration::from_secs(60)).unwrap();
    let first = a.rate_limiter(&name, rate).unwrap();
    let second = b.rate_limiter(&name, rate).unwrap();
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
    assert!(matches!(
        distsync_core::timeout(Duration::from_millis(100), second.acquire(1)).await,
        Err(Error::Timeout(_))
    ));

    // The node holds `<base µs> <added µs> <fingerprint>`: 20 s added by the last grant.
    let observer = zk::Client::connect(&config.hosts().join(","))
        .await
        .unwrap();
    let path = format!("{}/ratelimit/{name}", config.root());
    let (data, _) = observer.get_data(&path).await.unwrap();
    let text = String::from_utf8(data).unwrap();
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 3, "{text}");
    assert!(parts[0].parse::<u64>().is_ok(), "{text}");
    assert_eq!(parts[1], "20000000", "{text}");
    assert_eq!(parts[2], rate.fingerprint(), "{text}");

    // Another rate while the limiter is live, and more than the burst: typed errors.
    let other = b
        .rate_limiter(&name, Rate::new(5, Duration::from_secs(60)).unwrap())
        .unwrap();
    assert!(matches!(
        other.try_acquire(1).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        first.try_acquire(4).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        first.try_acquire(0).await,
        Err(Error::InvalidArgument(_))
    ));

    // A longer name is another limiter, under the first one's node.
    let nested = a.rate_limiter(&format!("{name}/inner"), rate).unwrap();
    assert!(nested.try_acquire(3).await.unwrap().is_granted());
    // And a limiter whose node exists only as that ancestor starts idle.
    let parent = a
        .rate_limiter(&format!("{name}-parent/child"), rate)
        .unwrap();
    assert!(parent.try_acquire(1).await.unwrap().is_granted());
    let ancestor = a
        .rate_limiter(
            &format!("{name}-parent"),
            Rate::new(1, Duration::from_secs(60)).unwrap(),
        )
        .unwrap();
    assert!(ancestor.try_acquire(1).await.unwrap().is_granted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_waits_for_the_permit_on_the_servers_clock() {
    let Some((a, b, _, name)) = clients().await else {
        return;
    };
    let rate: Rate = "1/300ms".parse().unwrap();
    a.rate_limiter(&name, rate)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    distsync_core::timeout(
        Duration::from_secs(10),
        b.rate_limiter(&name, rate).unwrap().acquire(1),
    )
    .await
    .unwrap();
    // The server's clock decides; the client's sleep follows its `retry_after`.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the second permit came after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_no_limiter_is_a_typed_error() {
    let Some((a, _, config, name)) = clients().await else {
        return;
    };
    let observer = zk::Client::connect(&config.hosts().join(","))
        .await
        .unwrap();
    let path = format!("{}/ratelimit/{name}", config.root());
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let parent = path.rsplit_once('/').unwrap().0;
    observer.mkdir(parent, &persistent).await.unwrap();
    observer
        .create(&path, b"not a limiter", &persistent)
        .await
        .unwrap();
    let limiter = a.rate_limiter(&name, "1/1s".parse().unwrap()).unwrap();
    assert!(matches!(
        limiter.try_acquire(1).await,
        Err(Error::Backend { .. })
    ));
    // Left as it was: never overwritten.
    let (data, _) = observer.get_data(&path).await.unwrap();
    assert_eq!(data, b"not a limiter");
    observer.delete(&path, None).await.unwrap();
}
