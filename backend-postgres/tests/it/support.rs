//! What the transaction tests share: names of their own, and bounded waits.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::server_url;
use distsync_core::Name;
use distsync_postgres::PostgresBackend;
use sqlx::PgPool;

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

/// A backend on a schema of its own (named after `what`, the process and the time), a
/// pool on the server's default schema, and the schema's name; `None` when
/// `DISTSYNC_POSTGRES_URL` is unset (a failure under `CI=true`).
pub(crate) async fn scoped(what: &str) -> Option<(PostgresBackend, PgPool, String)> {
    scoped_with(what, "").await
}

/// [`scoped`], the backend's URL also carrying the query parameters `options`
/// (`key=value&...`; empty for none).
pub(crate) async fn scoped_with(
    what: &str,
    options: &str,
) -> Option<(PostgresBackend, PgPool, String)> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("{what}_{}_{nanos:x}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut scoped_url = format!("{url}{separator}schema={schema}");
    if !options.is_empty() {
        scoped_url = format!("{scoped_url}&{options}");
    }
    let backend = distsync_postgres::backend(&scoped_url).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    Some((backend, pool, schema))
}

/// Drops a schema of [`scoped`].
pub(crate) async fn drop_schema(pool: &PgPool, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(pool)
        .await
        .unwrap();
}
