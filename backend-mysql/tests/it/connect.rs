//! Connecting: a port nothing listens on fails at once, not after `connect_timeout`,
//! and the error names the option that bounds the wait. Needs no server.

use distsync_conformance::connect_checks::{assert_refused_at_once, refused_port};

#[tokio::test]
async fn a_refused_port_fails_at_once() {
    let url = format!(
        "mysql://app:pw-3f1@127.0.0.1:{}/db?connect_timeout=60s",
        refused_port()
    );
    assert_refused_at_once(&url, "pw-3f1", |url| async move {
        distsync::connect(&url).await
    })
    .await;
}
