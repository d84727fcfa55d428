//! The bound on session TTLs that turns on the lock-delay after the store forgets
//! (see the crate docs, "When the store forgets"). The lock-delay itself is measured on
//! a wiped private server by the conformance cases `server_wipe_one_holder` and
//! `server_wipe_one_holder_bounded`.
//!
//! Runs when `DISTSYNC_NATS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Backend, Error, SessionOptions};

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_declares_the_lock_delay_and_refuses_longer_sessions() {
    let Some(url) = server_url("DISTSYNC_NATS_URL") else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let unbounded = distsync_nats::backend(&url).await.unwrap();
    assert!(!unbounded.capabilities().exclusive_across_restart);
    let client = distsync_nats::backend(&format!("{url}{separator}max_session_ttl=2s"))
        .await
        .unwrap();
    assert!(client.capabilities().exclusive_across_restart);
    let refused = client
        .session(SessionOptions::with_ttl(Duration::from_secs(3)))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "a 3 s session under a 2 s bound: {refused:?}"
    );
}
