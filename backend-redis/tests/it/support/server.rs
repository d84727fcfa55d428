//! The shared test server (`DISTSYNC_REDIS_URL`) and namespaces of a test's own on it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The shared test server's URL, or `None` after saying loudly that the test is
/// skipped; a failure under `CI=true` ([`distsync_conformance::server_url`]).
pub(crate) fn server_url() -> Option<String> {
    distsync_conformance::server_url("DISTSYNC_REDIS_URL")
}

/// A namespace no other test of any run uses: `<tag>-<pid>-<nanos>-<n>:`.
pub(crate) fn unique_namespace(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}-{}-{nanos}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `server` with `namespace` as its key prefix, after the options `server` already
/// has (the shared server's URL may carry some, `max_session_ttl=` among them).
pub(crate) fn with_namespace(server: &str, namespace: &str) -> String {
    match server.split_once('?') {
        Some((base, query)) if !query.is_empty() => format!(
            "{}?{query}&namespace={namespace}",
            base.trim_end_matches('/')
        ),
        Some((base, _)) => format!("{}?namespace={namespace}", base.trim_end_matches('/')),
        None => format!("{}?namespace={namespace}", server.trim_end_matches('/')),
    }
}
