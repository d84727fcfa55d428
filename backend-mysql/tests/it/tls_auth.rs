//! TLS, passwords and client certificates against the TLS MariaDB of
//! `scripts/servers.sh` (`DISTSYNC_MYSQL_TLS_URL`, `DISTSYNC_TLS_DIR`:
//! `require_secure_transport=ON`, a user created `REQUIRE X509`); skipped when the URL
//! is unset.
//!
//! Every failure must be a typed error that arrives within the connect timeout and
//! never shows the password.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use distsync_conformance::connect_checks::{
    self, assert_no_secret, lock_election_and_queue, tls_dir, with_param, without_param,
};
use distsync_core::raw::DEFAULT_CONNECT_TIMEOUT;
use distsync_core::{Coordinator, Error};
use distsync_mysql::MysqlConfig;
use sqlx::mysql::{MySqlPoolOptions, MySqlSslMode};

/// Generous bound for "within the timeout": the timeout plus scheduling slack.
const SLACK: Duration = Duration::from_secs(2);

/// The error of connecting to `url`, which must fail within `connect_timeout`.
async fn connect_err(url: &str, connect_timeout: Duration) -> Error {
    connect_checks::connect_err(url, connect_timeout, SLACK, |url| async move {
        distsync_mysql::backend(&url).await
    })
    .await
}

/// The TLS server's URL with tables of its own (a fresh `table_prefix`), or `None`
/// (after saying so) when the servers are not running.
pub(crate) fn tls_url() -> Option<url::Url> {
    let raw = distsync_conformance::server_url("DISTSYNC_MYSQL_TLS_URL")?;
    let url = url::Url::parse(&raw).expect("DISTSYNC_MYSQL_TLS_URL parses");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "tls_{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // Connecting creates the test's own tables over TLS, a handshake per connection
    // and a DDL statement per table: beside CPU and disk hogs that outlasts the
    // default 5 s, which these tests do not judge (a refusal comes at once whatever
    // the bound, and `connect_err` checks its own).
    let url = with_param(&url, "connect_timeout", "30s");
    Some(with_param(&url, "table_prefix", &prefix))
}

/// The password of `url`.
pub(crate) fn password(url: &url::Url) -> String {
    url.password()
        .expect("the TLS URL has a password")
        .to_owned()
}

/// The TLS cipher of a connection made as `config` says (empty: no TLS), and the
/// tables of its prefix dropped.
pub(crate) async fn cipher_then_drop_tables(config: &MysqlConfig) -> String {
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(config.connect_options().clone())
        .await
        .unwrap();
    let (_, cipher): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_one(&pool)
        .await
        .unwrap();
    for table in ["meta", "kv", "log", "leases"] {
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS {}{table}",
            config.table_prefix()
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    cipher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_election_and_queue_over_tls_with_a_password_and_a_client_certificate() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    let config = MysqlConfig::parse(url.as_str()).unwrap();
    // The files alone ask for TLS with the server's certificate and name checked.
    assert!(matches!(config.ssl_mode(), MySqlSslMode::VerifyIdentity));
    let backend = distsync_mysql::backend(url.as_str()).await.unwrap();
    for shown in [
        format!("{backend:?}"),
        format!("{config:?}"),
        config.to_string(),
    ] {
        assert!(!shown.contains(&password), "the password leaked: {shown}");
    }
    lock_election_and_queue(&Coordinator::new(backend)).await;
    let cipher = cipher_then_drop_tables(&config).await;
    assert!(!cipher.is_empty(), "the connection is not TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_mode_required_without_a_ca_encrypts_without_checking_the_server() {
    let Some(url) = tls_url() else { return };
    let url = with_param(&without_param(&url, "ca"), "ssl-mode", "required");
    let config = MysqlConfig::parse(url.as_str()).unwrap();
    assert!(matches!(config.ssl_mode(), MySqlSslMode::Required));
    let coordinator = Coordinator::new(distsync_mysql::backend(url.as_str()).await.unwrap());
    let queue = coordinator.queue("q").unwrap();
    queue.enqueue(Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(queue.dequeue().await.unwrap(), Bytes::from_static(b"x"));
    drop(coordinator);
    let cipher = cipher_then_drop_tables(&config).await;
    assert!(!cipher.is_empty(), "the connection is not TLS");
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(url) = tls_url() else { return };
    let real = password(&url);
    let mut wrong = url.clone();
    let wrong_password = "not-the-password-5a9e";
    wrong.set_password(Some(wrong_password)).unwrap();
    let error = connect_err(wrong.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(error.to_string().contains("Access denied"), "{error}");
    assert!(!error.is_transient());
    assert_no_secret(&error, wrong_password);
    assert_no_secret(&error, &real);
    // No password at all.
    let mut none = url.clone();
    none.set_password(None).unwrap();
    let error = connect_err(none.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert_no_secret(&error, &real);
}

#[tokio::test]
async fn a_login_without_the_required_client_certificate_is_an_authentication_error() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    // TLS with the server checked, but no client certificate: the user `REQUIRE`s one.
    let url = without_param(&without_param(&url, "cert"), "key");
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(error.to_string().contains("Access denied"), "{error}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn a_login_without_tls_is_refused() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    let url = without_param(&without_param(&without_param(&url, "ca"), "cert"), "key");
    let url = with_param(&url, "ssl-mode", "disabled");
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    // The server refuses the login (`require_secure_transport`, and no certificate for
    // a user that `REQUIRE`s one).
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(error.to_string().contains("Access denied"), "{error}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    let url = with_param(&url, "ca", &format!("{}/other-ca.crt", tls_dir()));
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
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
    let password = password(&url);
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/other-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/other-client.key"));
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    let dir = tls_dir();
    let url = with_param(&url, "cert", &format!("{dir}/expired-client.crt"));
    let url = with_param(&url, "key", &format!("{dir}/expired-client.key"));
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn missing_certificate_files_are_invalid_arguments() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    for key in ["ca", "cert", "key"] {
        let path = format!("/nonexistent/distsync/{key}.pem");
        let url = with_param(&url, key, &path);
        // Before any connection: no time to connect.
        let error = connect_err(url.as_str(), Duration::ZERO).await;
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        assert!(error.to_string().contains(&path), "{error}");
        assert_no_secret(&error, &password);
    }
}
