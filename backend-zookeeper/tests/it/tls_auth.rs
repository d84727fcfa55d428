//! TLS and SASL DIGEST-MD5 login against the TLS ZooKeeper of `scripts/servers.sh`
//! (`DISTSYNC_ZOOKEEPER_TLS_URL`, `DISTSYNC_TLS_DIR`; skipped loudly when unset, a
//! failure under `CI=true`).
//!
//! Every failure must be a typed error that arrives within the connect timeout and
//! never shows the password.
//!
//! Built with the `tls` and `sasl` features (on by default): without them `zks://` and
//! `sasl=` are `Error::Unsupported` (the config's unit tests check that).
#![cfg(all(feature = "tls", feature = "sasl"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distsync_conformance::connect_checks::{self, assert_no_secret, tls_dir};
use distsync_core::{Coordinator, Error};
use distsync_zookeeper::ZkConfig;

/// Generous bound for "within the timeout": the timeout plus scheduling slack.
const SLACK: Duration = Duration::from_secs(3);
/// The connect timeout of the cases that must fail: a TLS handshake the server
/// refuses makes the client retry until then.
const FAIL_WITHIN: Duration = Duration::from_secs(2);

/// The error of connecting to `url`, which must fail within `connect_timeout`.
async fn connect_err(url: &url::Url, connect_timeout: Duration) -> Error {
    connect_checks::connect_err(url.as_str(), connect_timeout, SLACK, |url| async move {
        distsync_zookeeper::backend(&url).await
    })
    .await
}

/// The TLS server's URL with a root of its own under the test prefix, or `None`
/// (after saying so) when the servers are not running.
fn tls_url() -> Option<url::Url> {
    let raw = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_TLS_URL")?;
    let mut url = url::Url::parse(&raw).expect("DISTSYNC_ZOOKEEPER_TLS_URL parses");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = format!(
        "{}/test-{}-{}",
        url.path().trim_end_matches('/'),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    url.set_path(&root);
    Some(url)
}

/// `url` with query parameter `key` set to `value` (`None`: removed).
fn with_param(url: &url::Url, key: &str, value: Option<&str>) -> url::Url {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != key)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if let Some(value) = value {
        pairs.push((key.to_owned(), value.to_owned()));
    }
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    url
}

/// `url` failing fast: `connect_timeout` set to [`FAIL_WITHIN`].
fn failing_fast(url: &url::Url) -> url::Url {
    with_param(url, "connect_timeout", Some("2s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_over_tls_with_a_sasl_login() {
    let Some(url) = tls_url() else { return };
    let password = url
        .password()
        .expect("the TLS URL has a password")
        .to_owned();
    let config: ZkConfig = url.as_str().parse().unwrap();
    assert!(config.tls() && config.sasl());
    let backend = distsync_zookeeper::backend(url.as_str()).await.unwrap();
    for debug in [format!("{backend:?}"), format!("{config:?}")] {
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
    let taken = coordinator
        .locker(&other, "l")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("free once unlocked");
    taken.unlock().await.unwrap();
    other.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_wrong_sasl_password_is_an_authentication_error_without_the_password() {
    let Some(url) = tls_url() else { return };
    let real = url.password().unwrap().to_owned();
    let mut wrong = failing_fast(&url);
    let wrong_password = "not-the-password-7d2e";
    wrong.set_password(Some(wrong_password)).unwrap();
    let error = connect_err(&wrong, FAIL_WITHIN).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert_no_secret(&error, wrong_password);
    assert_no_secret(&error, &real);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let other_ca = format!("{}/other-ca.crt", tls_dir());
    let url = with_param(&failing_fast(&url), "ca", Some(&other_ca));
    let error = connect_err(&url, FAIL_WITHIN).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(error.to_string().contains("over TLS"), "{error}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn no_client_certificate_or_one_of_another_ca_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let url = failing_fast(&url);
    let without = with_param(&with_param(&url, "cert", None), "key", None);
    assert_eq!(
        without
            .as_str()
            .parse::<ZkConfig>()
            .unwrap()
            .client_cert_files(),
        None
    );
    let error = connect_err(&without, FAIL_WITHIN).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
    let dir = tls_dir();
    let foreign = with_param(&url, "cert", Some(&format!("{dir}/other-client.crt")));
    let foreign = with_param(&foreign, "key", Some(&format!("{dir}/other-client.key")));
    let error = connect_err(&foreign, FAIL_WITHIN).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn unusable_certificate_files_are_invalid_arguments() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let missing = with_param(&url, "ca", Some("/nonexistent/distsync/ca.crt"));
    let error = connect_err(&missing, Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/distsync/ca.crt"),
        "{error}"
    );
    assert_no_secret(&error, &password);
    // A key file that holds no key (the client certificate given twice).
    let dir = tls_dir();
    let no_key = with_param(&url, "key", Some(&format!("{dir}/client.crt")));
    let error = connect_err(&no_key, Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(error.to_string().contains("client.crt"), "{error}");
    // A CA file that holds no certificate (the client key given as the CA): the
    // message names the file, never the key it holds.
    let key_text = std::fs::read_to_string(format!("{dir}/client.key")).unwrap();
    let key_body = key_text.lines().nth(1).expect("a PEM body line");
    let key_as_ca = with_param(&url, "ca", Some(&format!("{dir}/client.key")));
    let error = connect_err(&key_as_ca, Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert_no_secret(&error, key_body);
}

#[tokio::test]
async fn plain_tcp_to_the_tls_port_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let host = url.host_str().unwrap();
    let port = url.port().unwrap();
    let plain = format!("zk://{host}:{port}/distsync-tls?connect_timeout=2s");
    let error = connect_err(&url::Url::parse(&plain).unwrap(), FAIL_WITHIN).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}
