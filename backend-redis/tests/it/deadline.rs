//! Nothing renews a session past its client-side deadline: the renewal and
//! acquisition scripts refuse a session key with less than the session's margin left
//! of its TTL, against a real Redis (`DISTSYNC_REDIS_URL`; skipped loudly when unset,
//! a failure under `CI=true`).

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::{Backend, Error, Name, SessionOptions};
use support::server_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_and_acquisitions_finding_less_than_the_margin_left_are_refused() {
    let Some(url) = server_url() else {
        return;
    };
    let backend = distsync_redis::backend(&url).await.unwrap();
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // TTL 6 s, margin 3 s: renewals every 2 s. Each session key is shortened to
    // 2.9 s right after the grant, as if the last renewal had landed ~3 s ago: at the
    // first renewal (~2 s) about 0.9 s is left, less than the margin. The key would
    // still exist then, so only the margin check can refuse it.
    let options = SessionOptions::with_ttl(Duration::from_secs(6)).margin(Duration::from_secs(3));
    let shortened = backend.session(options.clone()).await.unwrap();
    // The control: the same options, the key left alone.
    let control = backend.session(options).await.unwrap();
    let key = format!(
        "{{{}session:{}}}",
        distsync_redis::DEFAULT_NAMESPACE,
        shortened.id().0
    );
    let set: i64 = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(2_900)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(set, 1, "the session key {key} is missing");
    // Joining a line is refused too: the entry would outlive the owner's deadline.
    let name = Name::new(format!("deadline-{}", shortened.id())).unwrap();
    let refused = backend
        .locker(&shortened, name.clone())
        .unwrap()
        .try_lock()
        .await;
    assert!(
        matches!(refused, Err(Error::SessionLost)),
        "a lock taken past the deadline: {refused:?}"
    );
    let control_guard = backend
        .locker(&control, name)
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("the refused attempt left an entry behind");
    tokio::time::timeout(Duration::from_secs(5), shortened.lost())
        .await
        .expect("a renewal with less than the margin left was accepted");
    // The refused session is ended in the store at once, not left to expire.
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    // The control renewed past the same point and lives on.
    assert!(!control.is_lost());
    control_guard.unlock().await.unwrap();
    control.close().await.unwrap();
}
