//! The persistence read at connect: the shared test server runs without persistence
//! (no `survives_restart`); private `redis-server`s with an append-only file fsynced
//! on every write (declared), fsynced every second (not), and with `CONFIG` disabled
//! (the fsync policy unknown: not); and the lock-delay a server that forgets gets by
//! default, unless the URL says `max_session_ttl=off`.
//!
//! Runs when `DISTSYNC_REDIS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::Backend;
use support::PrivateRedis;

/// Connects, riding out a server that accepts connections but is still loading.
async fn connect(url: &str) -> distsync_redis::RedisBackend {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match distsync_redis::backend(url).await {
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.unwrap_or_else(|error| panic!("connecting: {error}")),
        }
    }
}

#[tokio::test]
async fn the_test_server_is_read_as_without_persistence() {
    let Some(url) = support::server_url() else {
        return;
    };
    let backend = connect(&url).await;
    let persistence = backend.persistence();
    // The test servers run `--appendonly no` and say so through `CONFIG GET`.
    assert_eq!(persistence.appendonly(), Some(false), "{persistence}");
    assert!(persistence.appendfsync().is_some(), "{persistence}");
    assert_eq!(persistence.save(), Some(""), "{persistence}");
    assert!(!persistence.survives_restart());
    assert!(!backend.capabilities().survives_restart);
    // Holds stay exclusive across a restart only with the lock-delay, on by default
    // for a server that forgets unless the URL turns it off.
    let lock_delay = !url.contains("max_session_ttl=off");
    assert_eq!(backend.capabilities().exclusive_across_restart, lock_delay);
    assert_eq!(
        backend.capabilities(),
        &distsync_redis::capabilities().with_exclusive_across_restart(lock_delay)
    );
}

#[tokio::test]
async fn an_append_only_file_fsynced_on_every_write_survives_a_restart() {
    if support::server_url().is_none() {
        return;
    }
    let server = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let backend = connect(&server.url("")).await;
    assert_eq!(backend.persistence().appendonly(), Some(true));
    assert_eq!(backend.persistence().appendfsync(), Some("always"));
    assert!(backend.capabilities().survives_restart);
    // Every acknowledged grant and release is on disk: holds stay exclusive across
    // a restart without a lock-delay.
    assert_eq!(
        backend.capabilities(),
        &distsync_redis::capabilities()
            .with_survives_restart(true)
            .with_exclusive_across_restart(true)
    );
}

#[tokio::test]
async fn a_server_that_forgets_gets_the_lock_delay_unless_the_url_turns_it_off() {
    if support::server_url().is_none() {
        return;
    }
    let server = PrivateRedis::start(&[]);
    let default = connect(&server.url("")).await;
    assert!(!default.persistence().survives_restart());
    assert!(default.capabilities().exclusive_across_restart);
    // The default bound admits a session opened without options, and refuses a longer
    // one with an error that names the URL option.
    let session = default.session(Default::default()).await.unwrap();
    session.close().await.unwrap();
    let longer = distsync_redis::DEFAULT_MAX_SESSION_TTL + Duration::from_secs(1);
    match default
        .session(distsync_core::SessionOptions::with_ttl(longer))
        .await
    {
        Err(distsync_core::Error::InvalidArgument(reason)) => {
            assert!(reason.contains("max_session_ttl="), "{reason}");
        }
        other => panic!("a session above the default bound: {other:?}"),
    }
    let off = connect(&server.url("?max_session_ttl=off")).await;
    assert!(!off.capabilities().exclusive_across_restart);
    off.session(distsync_core::SessionOptions::with_ttl(longer))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn everysec_does_not_survive_a_restart() {
    if support::server_url().is_none() {
        return;
    }
    let server = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let backend = connect(&server.url("")).await;
    assert_eq!(backend.persistence().appendfsync(), Some("everysec"));
    assert!(!backend.capabilities().survives_restart);
}

#[tokio::test]
async fn without_config_the_fsync_policy_is_unknown_and_not_durable() {
    if support::server_url().is_none() {
        return;
    }
    let server = PrivateRedis::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let backend = connect(&server.url("")).await;
    let persistence = backend.persistence();
    // `INFO persistence` says the append-only file is on, and nothing about fsync.
    assert_eq!(persistence.appendonly(), Some(true), "{persistence}");
    assert_eq!(persistence.appendfsync(), None, "{persistence}");
    assert!(!backend.capabilities().survives_restart);
}
