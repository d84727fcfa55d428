//! Connecting: a port nothing listens on fails at once, not after `connect_timeout`,
//! and the error names the option that bounds the wait. Needs no server.

use std::time::{Duration, Instant};

use distsync_core::Error;

/// A loopback port nothing listens on: one the kernel just gave out and took back.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Connects to `url` (a refused port, `connect_timeout=60s`, the password `pw-n85`)
/// and checks the failure: a connection error at once, naming `connect_timeout=`,
/// without the password.
async fn assert_refused_at_once(url: &str) {
    let started = Instant::now();
    let error = distsync_nats::connect(url).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`connect_timeout=`"), "{message}");
    assert!(!message.contains("pw-n85"), "{message}");
    // Far below the 60 s connect_timeout even on a starved machine: the refusal is not
    // retried until the timeout.
    assert!(
        took < Duration::from_secs(20),
        "a refused port took {took:?}: {message}"
    );
}

#[tokio::test]
async fn a_refused_port_fails_at_once() {
    let url = format!(
        "nats://app:pw-n85@127.0.0.1:{}?connect_timeout=60s",
        refused_port()
    );
    assert_refused_at_once(&url).await;
}
