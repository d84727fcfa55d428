//! TLS, SCRAM passwords, client certificates and timeouts against the TLS PostgreSQL of
//! `scripts/servers.sh` (`DISTSYNC_POSTGRES_TLS_URL`, `DISTSYNC_TLS_DIR`: `hostssl`
//! only, `scram-sha-256`, `clientcert=verify-ca`), and against a local listener that
//! accepts connections and never answers (no server needed).
//!
//! Every failure must be a typed error that arrives within the connect timeout and
//! never shows the password.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_conformance::connect_checks::{
    self, assert_no_secret, lock_election_and_queue, silent_server, tls_dir, with_param,
    without_param,
};
use distsync_core::raw::DEFAULT_CONNECT_TIMEOUT;
use distsync_core::{Coordinator, Error};
use distsync_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use distsync_postgres::PostgresConfig;

/// Generous bound for "within the timeout": the timeout plus scheduling slack.
const SLACK: Duration = Duration::from_secs(2);

/// The error of connecting to `url`, which must fail within `connect_timeout`.
async fn connect_err(url: &str, connect_timeout: Duration) -> Error {
    connect_checks::connect_err(url, connect_timeout, SLACK, |url| async move {
        distsync_postgres::backend(&url).await
    })
    .await
}

/// The TLS server's URL with a schema of its own, or `None` (after saying so) when the
/// servers are not running.
fn tls_url() -> Option<url::Url> {
    let raw = distsync_conformance::server_url("DISTSYNC_POSTGRES_TLS_URL")?;
    let url = url::Url::parse(&raw).expect("DISTSYNC_POSTGRES_TLS_URL parses");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "tls_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some(with_param(&url, "schema", &schema))
}

/// [`tls_url`] with a connect timeout long enough for a TLS handshake and SCRAM's key
/// derivation in a debug build on a loaded two-core runner (over 5 s there), for the
/// tests that connect and do not measure the timeout.
pub(crate) fn tls_url_to_connect() -> Option<url::Url> {
    tls_url().map(|url| with_param(&url, "connect_timeout", "30s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_election_and_queue_over_tls_with_a_password_and_a_client_certificate() {
    let Some(url) = tls_url_to_connect() else {
        return;
    };
    let password = url
        .password()
        .expect("the TLS URL has a password")
        .to_owned();
    let parsed = PostgresConfig::parse(url.as_str()).unwrap();
    assert!(matches!(
        parsed.options.get_ssl_mode(),
        PgSslMode::VerifyFull
    ));
    let backend = distsync_postgres::backend(url.as_str()).await.unwrap();
    for shown in [
        format!("{backend:?}"),
        format!("{parsed:?}"),
        parsed.to_string(),
    ] {
        assert!(!shown.contains(&password), "the password leaked: {shown}");
    }
    lock_election_and_queue(&Coordinator::new(backend)).await;
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(url) = tls_url() else { return };
    let real = url
        .password()
        .expect("the TLS URL has a password")
        .to_owned();
    let mut wrong = url.clone();
    let wrong_password = "not-the-password-7c2d";
    wrong.set_password(Some(wrong_password)).unwrap();
    let error = connect_err(wrong.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
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
    let password = url.password().unwrap().to_owned();
    let url = without_param(&without_param(&url, "sslcert"), "sslkey");
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    // SQLSTATE 28000: "connection requires a valid client certificate".
    assert!(matches!(error, Error::Authentication { .. }), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_connection_error() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let url = with_param(&url, "sslrootcert", &format!("{}/other-ca.crt", tls_dir()));
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
    let password = url.password().unwrap().to_owned();
    let dir = tls_dir();
    let url = with_param(&url, "sslcert", &format!("{dir}/other-client.crt"));
    let url = with_param(&url, "sslkey", &format!("{dir}/other-client.key"));
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let dir = tls_dir();
    let url = with_param(&url, "sslcert", &format!("{dir}/expired-client.crt"));
    let url = with_param(&url, "sslkey", &format!("{dir}/expired-client.key"));
    let error = connect_err(url.as_str(), DEFAULT_CONNECT_TIMEOUT).await;
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    // The server says why in its TLS alert (rustls: `CertificateExpired`; OpenSSL,
    // when another crate of the build turns on sqlx's native-tls: "certificate
    // expired"). It closes the connection right after the alert, with the client's
    // last handshake bytes unread, so its kernel answers with a reset, which can
    // reach the client first and discard the alert: the refusal then reads as a
    // reset. Either way the connection was refused.
    let text = format!("{error:?}");
    assert!(
        text.to_lowercase().contains("expired") || text.contains("ConnectionReset"),
        "{error:?}"
    );
    assert_no_secret(&error, &password);
}

#[tokio::test]
async fn missing_certificate_files_are_invalid_arguments() {
    let Some(url) = tls_url() else { return };
    let url = with_param(&url, "sslrootcert", "/nonexistent/distsync/ca.crt");
    let error = connect_err(url.as_str(), Duration::ZERO).await;
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/distsync/ca.crt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_from_pool_takes_a_pool_of_your_own() {
    let Some(url) = tls_url() else { return };
    let password = url.password().unwrap().to_owned();
    let dir = tls_dir();
    let schema = url
        .query_pairs()
        .find(|(key, _)| key == "schema")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    // Options built in code, as an application holding its secrets elsewhere would.
    let options = PgConnectOptions::new()
        .host(url.host_str().unwrap())
        .port(url.port().unwrap())
        .username(url.username())
        .password(&password)
        .database("distsync")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(format!("{dir}/ca.crt"))
        .ssl_client_cert(format!("{dir}/client.crt"))
        .ssl_client_key(format!("{dir}/client.key"));
    let settings = PostgresConfig::from_options(options.clone())
        .unwrap()
        .with_schema(&schema)
        .unwrap()
        // Long enough for a TLS handshake and SCRAM's key derivation in a debug build on
        // a loaded two-core runner, which took more than 3 s there.
        .with_connect_timeout(Duration::from_secs(30));
    // The test server runs with synchronous_commit = off: a pool that leaves it so is
    // refused (fencing tokens must survive a crash of the server).
    let lax = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    let error = distsync_postgres::backend_from_pool(lax, &settings)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument(message) if message.contains("synchronous_commit")),
        "{error:?}"
    );
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                distsync_postgres::sqlx::query(
                    "SELECT set_config('synchronous_commit', 'on', false)",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .unwrap();
    let backend = distsync_postgres::backend_from_pool(pool, &settings)
        .await
        .unwrap();
    let debug = format!("{backend:?} {settings:?} {settings}");
    assert!(!debug.contains(&password), "{debug}");
    lock_election_and_queue(&Coordinator::new(backend)).await;
}

#[tokio::test]
async fn a_silent_server_fails_connect_within_the_connect_timeout() {
    let (address, server) = silent_server().await;
    let timeout = Duration::from_millis(400);
    for url in [
        format!("postgres://u:hunter2-secret@{address}/db?sslmode=disable&connect_timeout=400ms"),
        format!("postgres://u:hunter2-secret@{address}/db?sslmode=require&connect_timeout=400ms"),
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
        assert!(error.to_string().contains("connect timeout"), "{error}");
        assert_no_secret(&error, "hunter2-secret");
    }
    // Set in code rather than in the URL.
    let parsed = PostgresConfig::parse(&format!("postgres://u@{address}/db"))
        .unwrap()
        .with_connect_timeout(timeout);
    let started = Instant::now();
    let result = tokio::time::timeout(
        timeout + SLACK,
        distsync_postgres::backend_with_config(&parsed),
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
async fn a_server_gone_silent_after_connect_fails_pool_calls_within_the_request_timeout() {
    use distsync_conformance::faults::proxy::{rewrite_url, PartitionMode, Proxy};
    let Some(url) = tls_url_to_connect() else {
        return;
    };
    let password = url.password().unwrap().to_owned();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = Proxy::start(upstream).await.unwrap();
    // The request timeout also bounds the set-up's calls before the cut: the pool opens
    // its connections within it (a TLS and SCRAM login through the proxy, which the
    // test's debug build computes slowly), then an enqueue. A two-core machine running
    // six copies of this test beside CPU hogs took over 2 s for the login: 5 s leaves
    // it room, and is what the silent call is measured against.
    let timeout = Duration::from_secs(5);
    let url = with_param(&url, "timeout", "5s");
    let through = rewrite_url(url.as_str(), &[proxy.address()]).unwrap();
    let coordinator = Coordinator::new(distsync_postgres::backend(&through).await.unwrap());
    let queue = coordinator.queue("silent").unwrap();
    queue.enqueue(Bytes::from_static(b"x")).await.unwrap();
    proxy.set(PartitionMode::Silent);
    // The call takes a pool connection: the pool checks an idle one with a ping first,
    // which the silent server never answers; the wait is bounded by `timeout`. A
    // counter's `add` is sent once (an enqueue, keyed, would be retried within the
    // one-shot budget), so one attempt's bound is what is measured.
    let counter = coordinator.counter("silent").unwrap();
    let started = Instant::now();
    // The documented bound: twice the request timeout (taking a pool connection, then
    // the statement's reply), plus scheduling slack.
    let result = tokio::time::timeout(2 * timeout + SLACK, counter.add(1))
        .await
        .expect("a call to a silent server must fail within twice the request timeout");
    let error = result.expect_err("the server is silent");
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() >= timeout / 2, "{error}");
    assert_no_secret(&error, &password);
    proxy.heal();
}
