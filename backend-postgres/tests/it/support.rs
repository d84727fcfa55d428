//! What the transaction tests share: names of their own, and bounded waits.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_core::Name;

/// A name no other test (or run) uses: `pgtest/<what>/<time>-<pid>`.
pub(crate) fn unique(what: &str) -> Name {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Name::new(format!("pgtest/{what}/{nanos:x}-{}", std::process::id())).unwrap()
}

/// A table name for `name` (letters, digits and `_` only), prefixed with `what`.
pub(crate) fn table(what: &str, name: &Name) -> String {
    let tail: String = name
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{what}_{}", tail.trim_start_matches("pgtest_"))
}

/// `future`'s output, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}
