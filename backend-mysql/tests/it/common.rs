//! Connecting each test to tables of its own, and small readers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use distsync_core::Coordinator;
use distsync_kv::StoreError;
use distsync_mysql::{MysqlConfig, MysqlKv};

/// A store in fresh tables, or `None` (the test is skipped, or fails under `CI=true`)
/// without a server; `query` is added to the URL.
pub(crate) async fn store(query: &str) -> Option<(MysqlKv, String)> {
    let url = distsync_conformance::server_url("DISTSYNC_MYSQL_URL")?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "t{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}table_prefix={prefix}{query}");
    Some((connect(&url).await, url))
}

/// A store in fresh tables (as [`store`]) and two coordinators over them, two clients
/// with pools of their own; `None` (the test is skipped) without a server.
pub(crate) async fn two_clients() -> Option<(MysqlKv, String, Coordinator, Coordinator)> {
    let (kv, url) = store("").await?;
    let a = distsync::connect(&url).await.unwrap();
    let b = distsync::connect(&url).await.unwrap();
    Some((kv, url, a, b))
}

/// Another client of the same tables.
pub(crate) async fn connect(url: &str) -> MysqlKv {
    let config = MysqlConfig::parse(url).unwrap();
    MysqlKv::connect(&config).await.unwrap()
}

/// The full name of the store's table `table` (`log`, `kv`, …) under the table prefix
/// of `url`.
pub(crate) fn table(url: &str, table: &str) -> String {
    format!("{}{table}", MysqlConfig::parse(url).unwrap().table_prefix())
}

/// Drops the tables of `kv`.
pub(crate) async fn drop_tables(kv: &MysqlKv, url: &str) {
    for name in ["meta", "kv", "log", "leases"] {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", table(url, name)))
            .execute(kv.pool())
            .await
            .unwrap();
    }
}

pub(crate) use distsync_kv::contract_tests::{events, get, keys, put, put_one};

/// The MySQL store's own error inside `error`.
pub(crate) fn store_error(error: &distsync_core::Error) -> &StoreError {
    distsync_kv::contract_tests::store_error(error, "mysql")
}

/// A bound on every wait of these tests: what should come in milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
