//! Connecting each test to tables of its own, and small readers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use distsync_kv::kv::{
    EventKind, KeyValue, Kv, Range, RangeResponse, Revision, Txn, TxnOp, WatchResponse,
};
use distsync_kv::StoreError;
use distsync_mysql::{MysqlConfig, MysqlKv};

/// A store in fresh tables, or `None` (the test is skipped) without a server; `query`
/// is added to the URL.
pub(crate) async fn store(query: &str) -> Option<(MysqlKv, String)> {
    let Ok(url) = std::env::var("DISTSYNC_MYSQL_URL") else {
        eprintln!("DISTSYNC_MYSQL_URL is not set: SKIPPING (scripts/servers.sh starts MariaDB)");
        return None;
    };
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

/// Another client of the same tables.
pub(crate) async fn connect(url: &str) -> MysqlKv {
    let config = MysqlConfig::parse(url).unwrap();
    MysqlKv::connect(&config).await.unwrap()
}

/// Drops the tables of `kv`.
pub(crate) async fn drop_tables(kv: &MysqlKv, url: &str) {
    let prefix = MysqlConfig::parse(url).unwrap().table_prefix().to_owned();
    for table in ["meta", "kv", "log", "leases"] {
        sqlx::query(&format!("DROP TABLE IF EXISTS {prefix}{table}"))
            .execute(kv.pool())
            .await
            .unwrap();
    }
}

pub(crate) fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::put(key, value.to_owned(), 0)
}

pub(crate) async fn put_one(kv: &MysqlKv, key: &str, value: &str) -> Revision {
    kv.txn(Txn::default().and_then(vec![put(key, value)]))
        .await
        .unwrap()
        .revision
}

pub(crate) async fn get(kv: &MysqlKv, key: &str) -> Option<KeyValue> {
    kv.range(Range::key(key))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

pub(crate) fn keys(response: &RangeResponse) -> Vec<&str> {
    response.kvs.iter().map(|kv| kv.key.as_str()).collect()
}

pub(crate) fn store_error(error: &distsync_core::Error) -> &StoreError {
    match error {
        distsync_core::Error::Backend { backend, source } => {
            assert_eq!(*backend, "mysql");
            source.downcast_ref::<StoreError>().unwrap()
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}

pub(crate) fn events(response: WatchResponse) -> Vec<(EventKind, String, Revision)> {
    match response {
        WatchResponse::Events(events) => events
            .into_iter()
            .map(|event| (event.kind, event.kv.key, event.kv.mod_revision))
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

/// A bound on every wait of these tests: what should come in milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
