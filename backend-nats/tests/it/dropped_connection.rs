//! An answer the connection's drop cut off never comes (NATS keeps nothing for a client
//! that is away): the call learns of the drop at once, not at the request timeout.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_conformance::faults::proxy::Proxy;
use distsync_conformance::faults::PartitionMode;

/// The request timeout of the client under test: far above what the call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the call may take: the drop, and a reconnection through the proxy for the
/// calls that retry.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_with_its_connection_fails_the_call_at_once() {
    let Some(url) = crate::common::url("it-dropped") else {
        return;
    };
    let server = crate::common::server_address(&url);
    let proxy = Proxy::start(server).await.expect("the proxy");
    let proxied = format!(
        "nats://{}/?bucket=it-dropped&timeout={}ms",
        proxy.address(),
        REQUEST_TIMEOUT.as_millis()
    );
    let backend = distsync_nats::backend(&proxied).await.expect("connecting");
    let name = crate::common::unique_name("dropped");
    let counter = backend.counter(name).expect("a counter");
    counter.add(1).await.expect("an add with its answer");

    // The next answer from the server is dropped and its connection reset.
    proxy.set(PartitionMode::LoseReply { after: 0 });
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, counter.add(1))
        .await
        .expect("the add ends within the request timeout");
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "an add whose answer went with its connection took {took:?} ({outcome:?})"
    );
    if let Err(error) = &outcome {
        assert!(error.is_transient(), "{error}");
    }
    proxy.set(PartitionMode::Forward);
    // An add that failed may have been applied; one that succeeded was, once.
    let value = counter.get().await.expect("reading the counter");
    assert!(
        value == 2 || (value == 1 && outcome.is_err()),
        "{value} after {outcome:?}"
    );
}
