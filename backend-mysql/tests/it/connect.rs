//! Connecting: a port nothing listens on fails at once, not after `connect_timeout`,
//! and the error names the option that bounds the wait. Needs no server.

use std::time::{Duration, Instant};

use distsync_core::Error;

#[tokio::test]
async fn a_refused_port_fails_at_once() {
    // Port 9 on loopback: nothing listens, so the kernel refuses at once.
    let url = "mysql://app:pw-3f1@127.0.0.1:9/db?connect_timeout=60s";
    let started = Instant::now();
    let error = distsync_mysql::connect(url).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(!error.to_string().contains("pw-3f1"), "{error}");
    assert!(error.to_string().contains("`connect_timeout=`"), "{error}");
    // Far below the 60 s connect_timeout even on a starved machine: the refusal is not
    // retried until the timeout.
    assert!(
        took < Duration::from_secs(20),
        "a refused port took {took:?}"
    );
}
