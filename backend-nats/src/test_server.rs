//! The test servers of the crate's own tests (`scripts/servers.sh`), and what the tests
//! read of their connections.

use std::sync::atomic::Ordering;

use crate::store::Store;

/// The backend of the test server whose URL the environment variable `var` holds, on
/// the bucket `bucket`; `None` after a loud skip notice when `var` is not set (a
/// failure under `CI=true`, see `distsync_conformance::server_url`).
///
/// # Panics
/// When the URL does not parse or the server cannot be connected.
pub(crate) async fn backend(var: &str, bucket: &str) -> Option<crate::NatsBackend> {
    let url = distsync_conformance::server_url(var)?;
    let config: crate::NatsConfig = url.parse().unwrap();
    let config = config.with_bucket(bucket).unwrap();
    Some(crate::backend_with_config(&config).await.unwrap())
}

/// The messages `store`'s client connection has sent.
pub(crate) fn sent(store: &Store) -> u64 {
    store
        .client
        .statistics()
        .out_messages
        .load(Ordering::Relaxed)
}
