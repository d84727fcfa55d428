//! The bound on session TTLs that turns on the lock-delay after the store forgets
//! (see the crate docs, "When the store forgets"). The lock-delay itself is measured on
//! a wiped private server by the conformance cases `server_wipe_one_holder` and
//! `server_wipe_one_holder_bounded`.
//!
//! Runs when `DISTSYNC_NATS_URL` is set (the test servers are installed); skipped
//! loudly otherwise, a failure under `CI=true`.

use distsync_core::Primitives;
use std::sync::Arc;
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

/// The bound of the idle clients' tests, and their sessions' TTL: each grant after a
/// marker is written waits it once.
const BOUND: Duration = Duration::from_secs(3);

/// A client with no session while its bucket was deleted and made again reads the new
/// epoch marker as its next session opens, though the new stream's sequences are past
/// the old one's (nothing else tells it): its tokens go on above those of the client
/// that made the new bucket, whose marker's offset is seeded from its clock.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_idle_across_a_wipe_reads_the_new_marker_at_its_next_session() {
    idle_across_a_wipe("it-idle-past", true).await;
}

/// As above, with the new stream's sequences still below those the idle client saw:
/// its read of the marker finds nothing at its read floor, and it tells the stream
/// made again from the stream's creation time.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_idle_across_a_wipe_opens_while_the_new_stream_is_behind() {
    idle_across_a_wipe("it-idle-behind", false).await;
}

/// A client locks three times and goes idle; the bucket's stream is deleted, a newcomer makes
/// it again and locks, and (with `past`) writes until the new stream's last sequence
/// passes the old one's, else asserts it below; the idle client then opens a session
/// and locks: its token must be above the newcomer's.
async fn idle_across_a_wipe(prefix: &str, past: bool) {
    let bucket = format!("{prefix}-{}", std::process::id());
    let Some(url) = crate::common::url(&bucket) else {
        return;
    };
    let bounded = format!("{url}&max_session_ttl={}s", BOUND.as_secs());
    let name = crate::common::unique_name("idle");
    let token = |backend: Arc<distsync_nats::NatsBackend>| {
        let name = name.clone();
        async move {
            let session = backend
                .session(SessionOptions::with_ttl(BOUND))
                .await
                .expect("a session");
            let guard = backend
                .locker(&session, name)
                .expect("a locker")
                .lock()
                .await
                .expect("the lock");
            let token = guard.token();
            guard.unlock().await.expect("unlocking");
            session.close().await.expect("closing the session");
            token
        }
    };
    let idle = Arc::new(distsync_nats::backend(&bounded).await.expect("connecting"));
    // Three times, so that the old stream's sequences run ahead of what the newcomer
    // writes once.
    let mut before = token(Arc::clone(&idle)).await;
    for _ in 0..2 {
        before = before.max(token(Arc::clone(&idle)).await);
    }

    let server = crate::common::server_address(&url);
    let jetstream = async_nats::jetstream::new(
        async_nats::connect(format!("nats://{server}"))
            .await
            .expect("a direct client"),
    );
    // A handle by name: it reads the stream made anew after the delete, too.
    let stream = crate::common::bucket_stream(&jetstream, &bucket).await;
    let last = || async { crate::common::stream_state(&stream).await.last_sequence };
    let old_last = last().await;
    jetstream
        .delete_stream(crate::common::stream_name(&bucket))
        .await
        .expect("deleting the bucket's stream");
    let newcomer = Arc::new(distsync_nats::backend(&bounded).await.expect("connecting"));
    let fresh = token(newcomer).await;
    assert!(
        fresh > before,
        "the fresh marker's offset: {fresh:?} after {before:?}"
    );
    if past {
        let filler = jetstream.get_key_value(&bucket).await.expect("the bucket");
        for key in 0..=old_last {
            filler
                .put(format!("filler-{key}"), "x".into())
                .await
                .expect("a filler key");
        }
        assert!(last().await > old_last);
    } else {
        let new_last = last().await;
        assert!(
            new_last < old_last,
            "the new stream at {new_last}, the old at {old_last}"
        );
    }

    let after = token(idle).await;
    assert!(
        after > fresh,
        "the idle client's token {after:?} after the newcomer's {fresh:?}: it kept its old offset"
    );
    let _ = jetstream
        .delete_stream(crate::common::stream_name(&bucket))
        .await;
}
