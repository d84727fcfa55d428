//! What the tests share: the server's URL, on a bucket of the test's own.

use std::time::Duration;

/// The test server's URL with `bucket=<bucket>`, or `None` after a loud skip notice
/// (a failure under `CI=true`).
pub(crate) fn url(bucket: &str) -> Option<String> {
    let url = distsync_conformance::server_url("DISTSYNC_NATS_URL")?;
    let base = url.split_once('?').map_or(url.as_str(), |(base, _)| base);
    Some(format!("{base}?bucket={bucket}"))
}

/// The server's address (`host:port`) in `url`, a URL of [`url`]'s.
///
/// # Panics
/// When `url` names no server.
pub(crate) fn server_address(url: &str) -> String {
    url.trim_start_matches("nats://")
        .split(['/', '?'])
        .next()
        .filter(|address| !address.is_empty())
        .expect("the server's address")
        .to_owned()
}

/// The name of the stream that holds `bucket`.
pub(crate) fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The stream of `bucket` ([`stream_name`]) through `jetstream`, a client of the test's
/// own: a handle that sends nothing until used, so that each read of its state is one
/// stream-info request ([`stream_state`]), where `get_stream` would send one for the
/// handle and `info` another.
///
/// # Panics
/// When `bucket` makes no valid stream name.
pub(crate) async fn bucket_stream(
    jetstream: &async_nats::jetstream::Context,
    bucket: &str,
) -> async_nats::jetstream::stream::Stream<()> {
    jetstream
        .get_stream_no_info(stream_name(bucket))
        .await
        .expect("the bucket's stream name")
}

/// The state of `stream` (its message count, its last sequence), in one stream-info
/// request to its leader: the crate's own read of it is not public.
///
/// # Panics
/// When the server has no such stream or does not answer.
pub(crate) async fn stream_state<I>(
    stream: &async_nats::jetstream::stream::Stream<I>,
) -> async_nats::jetstream::stream::State {
    stream.get_info().await.expect("the stream's info").state
}

/// A name no other test or run uses: `<what>-<process id>-<call id>`.
pub(crate) fn unique_name(what: &str) -> distsync_core::Name {
    distsync_core::Name::new(format!(
        "{what}-{}-{}",
        std::process::id(),
        distsync_core::raw::call_id()
    ))
    .expect("a name")
}

/// Waits until `check` holds, polling every 10 ms for at most `within`.
///
/// # Panics
/// When `check` still does not hold at the deadline, naming `what`.
pub(crate) async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
