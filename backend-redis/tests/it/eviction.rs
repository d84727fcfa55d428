//! The eviction check at connect, against private `redis-server`s started with an
//! evicting `maxmemory-policy` (one with `CONFIG` disabled, so that the policy is read
//! from `INFO memory`).
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::{Backend, Error};
use support::PrivateRedis;

fn servers_available() -> bool {
    support::server_url().is_some()
}

/// Connects, riding out a server that accepts connections but is still loading.
async fn connect(url: &str) -> distsync_core::Result<distsync_redis::RedisBackend> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match distsync_redis::backend(url).await {
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn assert_refused(result: distsync_core::Result<distsync_redis::RedisBackend>, policy: &str) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("maxmemory-policy"), "{message}");
            assert!(message.contains(policy), "{message}");
            assert!(message.contains("noeviction"), "{message}");
            assert!(message.contains("allow_eviction=true"), "{message}");
        }
        other => panic!("an evicting server was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn an_evicting_server_is_refused_unless_the_url_opts_in() {
    if !servers_available() {
        return;
    }
    let server = PrivateRedis::start(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    assert_refused(connect(&server.url("")).await, "allkeys-lru");

    let backend = connect(&server.url("?allow_eviction=true")).await.unwrap();
    let declared = backend.capabilities();
    assert_eq!(declared, &distsync_redis::capabilities_under_eviction());
    assert!(!declared.fencing);
    assert!(!declared.fifo_waiters);
    assert!(!declared.survives_restart);
    // It still works, with the weaker guarantees declared.
    let session = backend
        .session(distsync_core::SessionOptions::with_ttl(
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn the_policy_is_read_from_info_when_config_is_disabled() {
    if !servers_available() {
        return;
    }
    let server = PrivateRedis::start(&[
        "--maxmemory-policy",
        "volatile-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    assert_refused(connect(&server.url("")).await, "volatile-lru");
}

#[tokio::test]
async fn a_noeviction_server_gets_the_full_capabilities() {
    if !servers_available() {
        return;
    }
    let server = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    // The server runs without persistence: its default lock-delay keeps holds
    // exclusive across a restart.
    let full = distsync_redis::capabilities().with_exclusive_across_restart(true);
    let backend = connect(&server.url("")).await.unwrap();
    assert_eq!(backend.capabilities(), &full);
    assert!(backend.capabilities().fencing);
    // Opting in on a server that does not evict takes nothing away.
    let lenient = connect(&server.url("?allow_eviction=true")).await.unwrap();
    assert_eq!(lenient.capabilities(), &full);
}
