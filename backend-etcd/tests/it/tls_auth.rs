//! TLS, etcd auth with an RBAC role limited to the namespace prefix, and timeouts,
//! against the TLS etcd of `scripts/servers.sh` (`DISTSYNC_ETCD_TLS_URL`,
//! `DISTSYNC_TLS_DIR`), and against a local listener that accepts connections and
//! never answers (no server needed).
//!
//! Every failure must be a typed error that arrives within the connect timeout and
//! never shows the password.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_conformance::connect_checks::{self, assert_no_secret, silent_server, tls_dir};
use distsync_core::raw::DEFAULT_CONNECT_TIMEOUT;
use distsync_core::{Coordinator, Error};
use distsync_etcd::EtcdConfig;

/// Generous bound for "within the timeout": the timeout plus scheduling slack.
const SLACK: Duration = Duration::from_secs(2);

/// The error of connecting to `url`, which must fail within `connect_timeout`.
async fn connect_err(url: &str, connect_timeout: Duration) -> Error {
    connect_checks::connect_err(url, connect_timeout, SLACK, |url| async move {
        distsync_etcd::backend(&url).await
    })
    .await
}

/// The TLS server's URL with a namespace of its own under the prefix the limited
/// user's role grants (`distsync-tls/`), or `None` (after saying so) when the servers
/// are not running.
fn tls_url() -> Option<String> {
    let raw = distsync_conformance::server_url("DISTSYNC_ETCD_TLS_URL")?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (base, query) = raw.split_once('?').expect("the TLS URL has a query");
    Some(format!(
        "{}/test-{}-{}?{query}",
        base.trim_end_matches('/'),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn password(url: &str) -> String {
    let (userinfo, _) = url.split_once("://").unwrap().1.split_once('@').unwrap();
    userinfo.split_once(':').unwrap().1.to_owned()
}

/// `url` with query parameter `key` set to `value` (paths without `&` or `%`).
fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with(&format!("{key}=")))
        .map(str::to_owned)
        .collect();
    pairs.push(format!("{key}={value}"));
    format!("{base}?{}", pairs.join("&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limited_user_runs_a_lock_an_election_and_a_queue_under_its_prefix() {
    let Some(url) = tls_url() else { return };
    let secret = password(&url);
    let config = EtcdConfig::parse(&url).unwrap();
    for shown in [format!("{config}"), format!("{config:?}")] {
        assert!(!shown.contains(&secret), "the password leaked: {shown}");
    }
    let backend = distsync_etcd::backend(&url).await.unwrap();
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
async fn a_namespace_outside_the_role_is_permission_denied() {
    let Some(url) = tls_url() else { return };
    let outside = url.replace("/distsync-tls/", "/elsewhere/");
    assert_ne!(outside, url);
    let error = connect_err(&outside, DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert_no_secret(&error, &password(&url));
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(url) = tls_url() else { return };
    let real = password(&url);
    let wrong_password = "not-the-password-4f1c";
    let wrong = url.replace(&format!(":{real}@"), &format!(":{wrong_password}@"));
    let error = connect_err(&wrong, DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    assert!(!error.is_transient());
    assert_no_secret(&error, wrong_password);
    assert_no_secret(&error, &real);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let url = with_param(&url, "ca", &format!("{}/other-ca.crt", tls_dir()));
    let error = connect_err(&url, DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password(&url));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let Some(url) = tls_url() else { return };
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/other-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/other-client.key"));
    let error = connect_err(&url, DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password(&url));
}

#[tokio::test]
async fn missing_certificate_files_are_invalid_arguments() {
    let Some(url) = tls_url() else { return };
    let url = with_param(&url, "ca", "/nonexistent/distsync/ca.crt");
    let error = connect_err(&url, Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/distsync/ca.crt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_from_client_takes_a_client_of_your_own() {
    let Some(url) = tls_url() else { return };
    let config = EtcdConfig::parse(&url).unwrap();
    let dir = tls_dir();
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
    use distsync_etcd::etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("client.crt"), read("client.key")));
    let options = ConnectOptions::new()
        .with_user(config.user().unwrap(), password(&url))
        .with_tls(tls)
        .with_require_leader(true)
        .with_auto_token_refresh(true);
    let client = Client::connect(config.endpoints(), Some(options))
        .await
        .unwrap();
    let backend = distsync_etcd::backend_from_client(client, config.namespace()).unwrap();
    let coordinator = Coordinator::new(backend);
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "own")
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(
        guard.key().starts_with(config.namespace()),
        "{}",
        guard.key()
    );
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_silent_server_fails_connect_within_the_connect_timeout() {
    let (address, server) = silent_server().await;
    let timeout = Duration::from_millis(400);
    for url in [
        format!("etcd://u:hunter2-secret@{address}/ns?connect_timeout=400ms"),
        format!("etcd://u:hunter2-secret@{address}/ns?tls=true&connect_timeout=400ms"),
        format!("etcd://{address}?connect_timeout=400ms"),
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
    let config = EtcdConfig::parse(&format!("etcd://{address}"))
        .unwrap()
        .with_connect_timeout(timeout);
    let started = Instant::now();
    let result = tokio::time::timeout(timeout + SLACK, distsync_etcd::backend_with_config(&config))
        .await
        .expect("never hangs");
    assert!(
        matches!(result, Err(Error::Connection { .. })),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < timeout + SLACK);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_silent_after_connect_fails_calls_within_the_request_timeout() {
    use distsync_conformance::faults::proxy::{rewrite_url, PartitionMode, Proxy};
    let Some(url) = tls_url() else { return };
    let config = EtcdConfig::parse(&url).unwrap();
    let proxy = Proxy::start(config.endpoints()[0].clone()).await.unwrap();
    let url = with_param(&url, "timeout", "500ms");
    let through = rewrite_url(&url, &[proxy.address()]).unwrap();
    let coordinator = Coordinator::new(distsync_etcd::backend(&through).await.unwrap());
    let queue = coordinator.queue("silent").unwrap();
    queue.enqueue(Bytes::from_static(b"x")).await.unwrap();
    proxy.set(PartitionMode::Silent);
    let started = Instant::now();
    // Reads are retried across members for the retry budget (3 s, see `EtcdKv`), each
    // attempt bounded by the request timeout; a transaction that may have been sent is
    // not repeated.
    let bound = Duration::from_millis(500) + Duration::from_secs(3) + SLACK;
    let result = tokio::time::timeout(bound, queue.enqueue(Bytes::from_static(b"y")))
        .await
        .expect("a call to a silent server must fail within the request timeout and retry budget");
    let error = result.expect_err("the server is silent");
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "{error}");
    assert_no_secret(&error, &password(&url));
    proxy.heal();
}

#[tokio::test]
/// etcd closes the connection after the handshake (TLS 1.3 verifies the client's
/// certificate last), so the client sees a closed connection, not the reason; etcd's
/// log has "certificate has expired".
async fn an_expired_client_certificate_is_refused() {
    let Some(url) = tls_url() else { return };
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/expired-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/expired-client.key"));
    let error = connect_err(&url, DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password(&url));
}
