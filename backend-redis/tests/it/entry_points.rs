//! The crate's entry points, as every backend crate offers them: `BACKEND`,
//! `MIN_SESSION_TTL`, `capabilities()`, `connect`, `backend`, `backend_with_config`,
//! `backend_from_client` and the [`RedisConfig`] parsed from a URL (which never shows
//! its password). The server-side tests need a real Redis (`DISTSYNC_REDIS_URL`;
//! skipped loudly when unset, a failure under `CI=true`).

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::{Backend, Error, SessionOptions};
use distsync_redis::{
    capabilities, capabilities_under_eviction, capabilities_under_sentinel, RedisConfig, BACKEND,
    MIN_SESSION_TTL,
};
use support::{server_url, unique_namespace, with_namespace};

#[test]
fn every_capability_set_names_the_backend_and_its_shortest_ttl() {
    for (what, set) in [
        ("plain", capabilities()),
        ("eviction", capabilities_under_eviction()),
        ("sentinel", capabilities_under_sentinel(0)),
        ("sentinel with acks", capabilities_under_sentinel(1)),
    ] {
        assert_eq!(set.backend, BACKEND, "{what}");
        assert_eq!(set.min_session_ttl, MIN_SESSION_TTL, "{what}");
    }
}

#[test]
fn the_config_never_shows_its_password() {
    let url = "redis://app:s3cret@127.0.0.1:6390/2?namespace=ns:";
    let config: RedisConfig = url.parse().unwrap();
    assert_eq!(config, RedisConfig::parse(url).unwrap());
    let display = config.to_string();
    let debug = format!("{config:?}");
    for shown in [&display, &debug] {
        assert!(!shown.contains("s3cret"), "password shown: {shown}");
    }
    assert!(display.contains("127.0.0.1:6390/2"), "{display}");
    assert!(display.contains("namespace=ns:"), "{display}");
    assert_eq!(config.namespace(), "ns:");
    assert_eq!(config.db(), 2);
}

#[test]
fn a_malformed_url_is_a_typed_error_without_the_password() {
    for url in [
        "redis://app:s3cret@127.0.0.1:6390/notanumber",
        "redis://app:s3cret@127.0.0.1:6390/0?unknown=1",
        "mysql://app:s3cret@127.0.0.1/0",
    ] {
        match url.parse::<RedisConfig>() {
            Err(error @ Error::InvalidUrl { .. }) => {
                let shown = format!("{error} {error:?}");
                assert!(!shown.contains("s3cret"), "password shown: {shown}");
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sessions_shorter_than_min_session_ttl_are_refused() {
    let Some(url) = server_url() else { return };
    let config = RedisConfig::parse(&with_namespace(&url, &unique_namespace("min-ttl"))).unwrap();
    let backend = distsync_redis::backend_with_config(&config).await.unwrap();
    assert_eq!(backend.capabilities().min_session_ttl, MIN_SESSION_TTL);

    let below = MIN_SESSION_TTL - Duration::from_millis(1);
    match backend.session(SessionOptions::with_ttl(below)).await {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(BACKEND), "{message}")
        }
        other => panic!("a session of {below:?} was not refused: {other:?}"),
    }

    let session = backend
        .session(SessionOptions::with_ttl(MIN_SESSION_TTL))
        .await
        .expect("a session of MIN_SESSION_TTL opens");
    session.close().await.unwrap();
}

#[tokio::test]
async fn connect_and_backend_reach_the_same_store() {
    let Some(url) = server_url() else { return };
    let url = with_namespace(&url, &unique_namespace("entry"));
    let coordinator = distsync::connect(&url).await.unwrap();
    let backend = distsync_redis::backend(&url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    // A session of one entry point is usable by the other: the same store.
    let guard = backend
        .locker(&session, distsync_core::Name::new("entry").unwrap())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(guard.token().get() > 0);
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn backend_from_client_reaches_the_store_under_its_namespace() {
    let Some(url) = server_url() else { return };
    let namespace = unique_namespace("from-client");
    let client = distsync_redis::redis::Client::open(url.as_str()).unwrap();
    let own = distsync_redis::backend_from_client(
        client,
        distsync_redis::RedisOptions::new().namespace(namespace.as_str()),
    )
    .await
    .unwrap();
    let by_url = distsync_redis::backend(&with_namespace(&url, &namespace))
        .await
        .unwrap();
    let name = distsync_core::Name::new("entry").unwrap();
    let session = own.session(SessionOptions::default()).await.unwrap();
    let guard = own
        .locker(&session, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    // The same lock under the same namespace, reached by URL: held.
    let other = by_url.session(SessionOptions::default()).await.unwrap();
    let rival = by_url.locker(&other, name).unwrap();
    assert!(rival.try_lock().await.unwrap().is_none());
    guard.unlock().await.unwrap();
    assert!(rival.try_lock().await.unwrap().is_some());
}
