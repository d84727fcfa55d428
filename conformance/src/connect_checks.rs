//! Helpers the backend crates' connection tests share (`tests/it/tls_auth.rs`,
//! `tests/it/connect.rs`): the TLS test files, a server that never answers, a port
//! nothing listens on, a connect that must fail in time (or at once), the check that
//! an error never shows a secret, a URL's query parameters changed one at a time, and
//! one round trip of a lock, an election and a queue over a connection that works.

use std::future::Future;
use std::time::Duration;

use distsync_core::{redact_url, Bytes, Coordinator, Error, Result};
use tokio::time::Instant;

use crate::log_capture::LogCapture;
use crate::testing::server_url;

/// The directory of the test servers' TLS files (`DISTSYNC_TLS_DIR`, exported by
/// `scripts/servers.sh env` with the TLS URLs).
///
/// # Panics
/// When the variable is unset: call it only once a TLS URL was found.
pub fn tls_dir() -> String {
    server_url("DISTSYNC_TLS_DIR").expect("DISTSYNC_TLS_DIR is set with the TLS URLs")
}

/// Asserts that `secret` appears nowhere in `error`: not in its message, its `Debug`,
/// nor in the message or `Debug` of any error in its source chain.
///
/// # Panics
/// When it does.
pub fn assert_no_secret(error: &Error, secret: &str) {
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        texts.push(inner.to_string());
        texts.push(format!("{inner:?}"));
        source = inner.source();
    }
    for text in texts {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
}

/// A loopback listener that accepts connections and never reads or writes: they stay
/// open until the returned task is aborted.
pub async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let address = listener.local_addr().expect("the listener's address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

/// A loopback port nothing listens on: one the kernel just gave out and took back, so a
/// connection to it is refused at once.
///
/// # Panics
/// When no loopback port can be bound.
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener
        .local_addr()
        .expect("the listener's address")
        .port()
}

/// Asserts that `connect(url)`, where `url` names only refused ports, sets
/// `connect_timeout=60s` and holds the password `secret`, fails at once: far within
/// that timeout (20 s, for a starved machine), with an [`Error::Connection`] whose
/// message names `connect_timeout=`, the option that bounds the wait, and shows no
/// password.
///
/// # Panics
/// When a check fails, or `connect` succeeds.
pub async fn assert_refused_at_once<B, F, Fut>(url: &str, secret: &str, connect: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<B>>,
{
    assert!(url.contains("connect_timeout=60s"), "{}", redact_url(url));
    let started = Instant::now();
    let error = connect_err(url, Duration::from_secs(60), Duration::ZERO, connect).await;
    let took = started.elapsed();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_no_secret(&error, secret);
    let message = error.to_string();
    assert!(message.contains("`connect_timeout=`"), "{message}");
    // The refusal is not tried again until the timeout.
    assert!(
        took < Duration::from_secs(20),
        "a refused port took {took:?}: {message}"
    );
}

/// The error of `connect(url)`, which must fail within `connect_timeout` plus `slack`
/// (never hang, never succeed).
///
/// # Panics
/// When it connects, or takes longer.
pub async fn connect_err<B, F, Fut>(
    url: &str,
    connect_timeout: Duration,
    slack: Duration,
    connect: F,
) -> Error
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<B>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout(connect_timeout + slack, connect(url.to_owned()))
        .await
        .expect("connect must fail within its connect timeout, never hang");
    match result {
        Ok(_) => panic!("connected to {}, but expected an error", redact_url(url)),
        Err(error) => {
            assert!(started.elapsed() < connect_timeout + slack);
            error
        }
    }
}

/// Captures every `tracing` event (at TRACE, from distsync and the client crates) of
/// a login to `url` that opens and closes a session, and of a login to `wrong_url`
/// that must be refused, and asserts that neither `password` nor `wrong_password`
/// appears, and that the backend's own "connected" event was captured (so the capture
/// works). Returns the captured logs, for checks of the caller's own.
///
/// The subscriber is the current thread's default: run it on a current-thread
/// runtime (`#[tokio::test]`), so that the backend's tasks log through it too.
///
/// # Panics
/// When a check fails, the login to `url` fails or the one to `wrong_url` succeeds.
pub async fn assert_logs_never_show<B, F, Fut>(
    url: &str,
    password: &str,
    wrong_url: &str,
    wrong_password: &str,
    connect: F,
) -> String
where
    B: distsync_core::Backend + 'static,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<B>>,
{
    let captured = LogCapture::start();
    tracing::info!("capture started");
    let backend = connect(url.to_owned())
        .await
        .unwrap_or_else(|error| panic!("logging in: {error}"));
    let session = distsync_core::Coordinator::new(backend)
        .session()
        .await
        .unwrap_or_else(|error| panic!("opening a session: {error}"));
    session
        .close()
        .await
        .unwrap_or_else(|error| panic!("closing the session: {error}"));
    let Err(error) = connect(wrong_url.to_owned()).await else {
        panic!("a wrong password was accepted");
    };
    tracing::warn!(%error, ?error, "refused");
    let logs = captured.text();
    // The backend's own "connected" event shows the server without the password.
    assert!(logs.contains("connected"), "{logs}");
    assert!(
        logs.contains("capture started") && logs.contains("refused"),
        "{logs}"
    );
    assert!(!logs.contains(password), "the password is in the logs");
    assert!(
        !logs.contains(wrong_password),
        "the wrong password is in the logs"
    );
    logs
}

/// `url` with its query parameter `key` set to `value` (any earlier value removed).
pub fn with_param(url: &url::Url, key: &str, value: &str) -> url::Url {
    let mut url = without_param(url, key);
    url.query_pairs_mut().append_pair(key, value);
    url
}

/// `url` without its query parameter `key`.
pub fn without_param(url: &url::Url, key: &str) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != key)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    url
}

/// One round trip of each kind over `coordinator`: a lock (and a second session refused
/// it), an election and a queue.
///
/// # Panics
/// When a call fails or answers what it must not.
pub async fn lock_election_and_queue(coordinator: &Coordinator) {
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
