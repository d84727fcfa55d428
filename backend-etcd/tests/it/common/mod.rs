//! Helpers shared by the integration tests: finding the servers, unique names, bounded
//! waits.
#![allow(dead_code)]

pub(crate) mod etcdctl;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::faults::{private, PrivateServer};
use distsync_conformance::{connector, StoreKind};
use distsync_etcd::EtcdConfig;

/// `DISTSYNC_ETCD_URL`, or `None` (skip) as [`distsync_conformance::server_url`] says.
pub(crate) fn etcd_url() -> Option<String> {
    distsync_conformance::server_url("DISTSYNC_ETCD_URL")
}

/// The endpoints of an `etcd://` URL, as etcdctl wants them (`host:port,host:port`).
pub(crate) fn endpoints_of(url: &str) -> String {
    EtcdConfig::parse(url)
        .expect("a valid etcd URL")
        .endpoints()
        .join(",")
}

/// A name no other test run uses.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some`, at most `limit`; panics with `what` otherwise.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `future` with a deadline; panics with `what` if it does not finish.
pub(crate) async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// The sum of the samples of etcd's metric `name` whose labels contain every one of
/// `labels` (`key="value"` each), from the `/metrics` of the member at `endpoint`
/// (`host:port`, plain HTTP on the client port).
pub(crate) async fn etcd_metric(endpoint: &str, name: &str, labels: &[&str]) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let matches = (rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|label| rest.contains(label));
            matches.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A private etcd, or `None` (skip) when none can be started here; under `CI=true` a
/// missing etcd binary is a failure.
pub(crate) async fn private_etcd() -> Option<Box<dyn PrivateServer>> {
    if let Err(reason) = private::available(StoreKind::Etcd) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but no private etcd can be started: {reason}");
        }
        eprintln!("\n!!! SKIPPED: {reason}, so the tests on a private etcd did not run.\n");
        return None;
    }
    let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
    Some(private::start(StoreKind::Etcd, connect).await.unwrap())
}

/// `host:port` of a single-member URL.
pub(crate) fn single_endpoint(url: &str) -> String {
    EtcdConfig::parse(url).unwrap().endpoints()[0].clone()
}
