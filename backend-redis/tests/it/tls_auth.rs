//! TLS, ACL login and timeouts against the TLS Redis of `scripts/servers.sh`
//! (`DISTSYNC_REDIS_TLS_URL`, `DISTSYNC_TLS_DIR`), and against a local listener that
//! accepts connections and never answers (no server needed).
//!
//! Every failure must be a typed error that arrives within the connect timeout and
//! never shows the password.
//!
//! Built with the `tls` feature (on by default): without it `rediss://` is
//! `Error::Unsupported` and `redis::Client::build_with_tls` does not exist.
#![cfg(feature = "tls")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_conformance::connect_checks::{self, assert_no_secret, silent_server, tls_dir};
use distsync_core::{Coordinator, Error};
use distsync_redis::{RedisConfig, RedisOptions};

/// Generous bound for "within the timeout": the timeout plus scheduling slack.
const SLACK: Duration = Duration::from_secs(2);

/// The error of connecting to `url`, which must fail within `connect_timeout`.
async fn connect_err(url: &str, connect_timeout: Duration) -> Error {
    connect_checks::connect_err(url, connect_timeout, SLACK, |url| async move {
        distsync_redis::backend(&url).await
    })
    .await
}

/// The TLS server's URL with a namespace of its own under the ACL's prefix
/// (`distsync-tls:`), or `None` (after saying so) when the servers are not running.
fn tls_url() -> Option<url::Url> {
    let raw = distsync_conformance::server_url("DISTSYNC_REDIS_TLS_URL")?;
    let mut url = url::Url::parse(&raw).expect("DISTSYNC_REDIS_TLS_URL parses");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "test-{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(key, value)| {
            let value = if key == "namespace" {
                format!("{value}{unique}")
            } else {
                value.into_owned()
            };
            (key.into_owned(), value)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    Some(url)
}

/// `url` with query parameter `key` set to `value`.
fn with_param(url: &url::Url, key: &str, value: &str) -> url::Url {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != key)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.push((key.to_owned(), value.to_owned()));
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_election_and_queue_over_tls_with_an_acl_user() {
    let Some(url) = tls_url() else { return };
    let password = url
        .password()
        .expect("the TLS URL has a password")
        .to_owned();
    let backend = distsync_redis::backend(url.as_str()).await.unwrap();
    for debug in [
        format!("{backend:?}"),
        format!("{:?}", RedisConfig::parse(url.as_str()).unwrap()),
    ] {
        assert!(!debug.contains(&password), "the password leaked: {debug}");
    }
    let coordinator = Coordinator::new(backend);
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "l")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = coordinator.session().await.unwrap();
    assert!(coordinator
        .locker(&other, "l")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    guard.unlock().await.unwrap();
    let election = coordinator.election(&session, "e").unwrap();
    let leadership = election.campaign(Bytes::from_static(b"me")).await.unwrap();
    let leader = election.leader().await.unwrap().expect("a leader");
    assert_eq!(leader.value, Bytes::from_static(b"me"));
    leadership.resign().await.unwrap();
    let queue = coordinator.queue("q").unwrap();
    queue.enqueue(Bytes::from_static(b"1")).await.unwrap();
    queue.enqueue(Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(queue.dequeue().await.unwrap(), Bytes::from_static(b"1"));
    assert_eq!(
        queue.try_dequeue().await.unwrap(),
        Some(Bytes::from_static(b"2"))
    );
    other.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(url) = tls_url() else { return };
    let real = url
        .password()
        .expect("the TLS URL has a password")
        .to_owned();
    let mut wrong = url.clone();
    let wrong_password = "not-the-password-4f1c";
    wrong.set_password(Some(wrong_password)).unwrap();
    let error = connect_err(wrong.as_str(), RedisOptions::new().get_connect_timeout()).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    assert!(!error.is_transient());
    assert_no_secret(&error, wrong_password);
    assert_no_secret(&error, &real);
    // No password at all: the server's default user is off.
    let mut anonymous = url.clone();
    anonymous.set_password(None).unwrap();
    anonymous.set_username("").unwrap();
    let error = connect_err(
        anonymous.as_str(),
        RedisOptions::new().get_connect_timeout(),
    )
    .await;
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let other_ca = format!("{}/other-ca.crt", tls_dir());
    let url = with_param(&url, "ca", &other_ca);
    let error = connect_err(url.as_str(), RedisOptions::new().get_connect_timeout()).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(
        format!("{error:?}").to_lowercase().contains("certificate"),
        "{error:?}"
    );
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/other-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/other-client.key"));
    let error = connect_err(url.as_str(), RedisOptions::new().get_connect_timeout()).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn missing_certificate_files_are_invalid_arguments() {
    let Some(url) = tls_url() else { return };
    let url = with_param(&url, "ca", "/nonexistent/distsync/ca.crt");
    let error = connect_err(url.as_str(), Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/distsync/ca.crt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_client_takes_a_tls_client_of_your_own() {
    let Some(url) = tls_url() else { return };
    let parsed = RedisConfig::parse(url.as_str()).unwrap();
    let dir = tls_dir();
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
    let mut plain = url.clone();
    plain.set_query(None);
    let client = distsync_redis::redis::Client::build_with_tls(
        plain.as_str(),
        distsync_redis::redis::TlsCertificates {
            client_tls: Some(distsync_redis::redis::ClientTlsConfig {
                client_cert: read("client.crt"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.crt")),
        },
    )
    .unwrap();
    let options = RedisOptions::new()
        .namespace(parsed.namespace())
        .connect_timeout(Duration::from_secs(3));
    let backend = distsync_redis::backend_from_client(client, options)
        .await
        .unwrap();
    let debug = format!("{backend:?}");
    assert!(!debug.contains(url.password().unwrap()), "{debug}");
    assert!(debug.contains("rediss://"), "{debug}");
    let coordinator = Coordinator::new(backend);
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "own")
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_silent_server_fails_connect_within_the_connect_timeout() {
    let (address, server) = silent_server().await;
    let timeout = Duration::from_millis(400);
    for url in [
        format!("redis://u:hunter2-secret@{address}/0?connect_timeout=400ms"),
        format!("rediss://u:hunter2-secret@{address}/0?connect_timeout=400ms"),
    ] {
        let started = Instant::now();
        let error = connect_err(&url, timeout).await;
        assert!(
            matches!(error, Error::Connection { .. }),
            "{url}: {error:?}"
        );
        assert!(error.is_transient());
        assert!(
            started.elapsed() >= timeout / 2,
            "{url}: failed before the server could answer: {error}"
        );
        assert_no_secret(&error, "hunter2-secret");
    }
    // Set in code rather than in the URL.
    let parsed = RedisConfig::parse(&format!("redis://{address}/0"))
        .unwrap()
        .with_connect_timeout(timeout);
    let started = Instant::now();
    let result = tokio::time::timeout(
        timeout + SLACK,
        distsync_redis::backend_with_config(&parsed),
    )
    .await
    .expect("never hangs");
    assert!(
        matches!(result, Err(Error::Connection { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < timeout + SLACK);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_silent_after_connect_fails_calls_within_the_request_timeout() {
    use distsync_conformance::faults::proxy::{rewrite_url, PartitionMode, Proxy};
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = Proxy::start(upstream).await.unwrap();
    let url = with_param(&url, "timeout", "500ms");
    let through = rewrite_url(url.as_str(), &[proxy.address()]).unwrap();
    let coordinator = Coordinator::new(distsync_redis::backend(&through).await.unwrap());
    let queue = coordinator.queue("silent").unwrap();
    queue.enqueue(Bytes::from_static(b"x")).await.unwrap();
    proxy.set(PartitionMode::Silent);
    // A counter's `add` is sent once (an enqueue, keyed, would be retried within the
    // one-shot budget), so one attempt's bound is what is measured.
    let counter = coordinator.counter("silent").unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_millis(500) + SLACK, counter.add(1))
        .await
        .expect("a call to a silent server must fail within the request timeout");
    let error = result.expect_err("the server is silent");
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "{error}");
    assert_no_secret(&error, &password);
    proxy.heal();
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/expired-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/expired-client.key"));
    let error = connect_err(url.as_str(), RedisOptions::new().get_connect_timeout()).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    // The server says why in its TLS alert.
    assert!(format!("{error:?}").contains("Expired"), "{error:?}");
    assert_no_secret(&error, &password);
}
