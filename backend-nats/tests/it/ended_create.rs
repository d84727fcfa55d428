//! A session's create that lands while its answer is lost, and whose key's TTL ends it
//! before the store answers again, leaves a delete marker where the key was: the session
//! opens all the same (under a fresh id), where a create compared with "no message"
//! would find the marker and fail.

use std::time::Duration;

use distsync_conformance::faults::proxy::Proxy;
use distsync_conformance::faults::PartitionMode;
use distsync_core::{Backend, Name, Primitives, SessionOptions};

/// The session TTL: the store's shortest, so that the key ends soon in the cut.
const TTL: Duration = distsync_nats::MIN_SESSION_TTL;

/// How long the server may take to end the key and write its marker, once cut off.
const MARKER_WITHIN: Duration = Duration::from_secs(20);

/// How long the open may take once the cut is healed.
const OPEN_WITHIN: Duration = Duration::from_secs(20);

/// The header JetStream puts on the delete marker it writes when a TTL ends a key.
const MARKER_REASON: &str = "Nats-Marker-Reason";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_key_ended_unanswered_opens_all_the_same() {
    let bucket = format!("it-ended-{}", std::process::id());
    let Some(url) = crate::common::url(&bucket) else {
        return;
    };
    let server = crate::common::server_address(&url);
    let proxy = Proxy::start(server.clone()).await.expect("the proxy");
    let proxied = format!("nats://{}/?bucket={bucket}", proxy.address());
    let backend = std::sync::Arc::new(distsync_nats::backend(&proxied).await.expect("connecting"));
    // A first session: the client is connected and the bucket made, so that the next
    // open sends only its read of the epoch marker, then its key's create.
    backend
        .session(SessionOptions::with_ttl(TTL))
        .await
        .expect("a first session")
        .close()
        .await
        .expect("closing the first session");

    let jetstream = async_nats::jetstream::new(
        async_nats::connect(format!("nats://{server}"))
            .await
            .expect("a direct client"),
    );
    let stream = crate::common::bucket_stream(&jetstream, &bucket).await;
    let before = crate::common::stream_state(&stream).await.last_sequence;

    // The create (a publish on a session key's subject) reaches the store; its answer
    // and everything after is cut.
    proxy.set_on_request(
        format!("$KV.{bucket}.session.").as_bytes(),
        PartitionMode::LoseReplyThenReset { after: 0 },
    );
    let opening = tokio::spawn({
        let backend = std::sync::Arc::clone(&backend);
        async move { backend.session(SessionOptions::with_ttl(TTL)).await }
    });
    // The key's TTL ends it while the client is cut off: its marker is written.
    crate::common::until(MARKER_WITHIN, "the ended key's delete marker", || {
        let stream = stream.clone();
        async move { marker_after(&stream, before).await }
    })
    .await;
    proxy.heal();

    let session = tokio::time::timeout(OPEN_WITHIN, opening)
        .await
        .expect("the open ends after the heal")
        .expect("the open's task")
        .expect("a session despite its first key ended unanswered");
    assert!(!session.is_lost());
    let name = crate::common::unique_name("ended");
    let guard = backend
        .locker(&session, Name::new(name.as_str()).expect("a name"))
        .expect("a locker")
        .try_lock()
        .await
        .expect("a try_lock with the session")
        .expect("a free lock");
    guard.unlock().await.expect("unlocking");
    session.close().await.expect("closing");
    let _ = jetstream
        .delete_stream(crate::common::stream_name(&bucket))
        .await;
}

/// Whether a message after `before` is a delete marker a TTL wrote.
async fn marker_after(stream: &async_nats::jetstream::stream::Stream<()>, before: u64) -> bool {
    let last = crate::common::stream_state(stream).await.last_sequence;
    for seq in before + 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            if message
                .headers
                .get(MARKER_REASON)
                .is_some_and(|reason| !reason.as_str().is_empty())
            {
                return true;
            }
        }
    }
    false
}
