//! `/metrics` parses as Prometheus parses it, with the store's gauges and, when the
//! process hands its recorder over, the metrics layer's counters.

use std::collections::HashMap;
use std::sync::OnceLock;

use distsync::SessionOptions;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use prometheus_parse::{Sample, Scrape, Value};
use rstest::rstest;
use rstest_reuse::apply;

use crate::support::{acting, coordinator, every_store, get, prefix, serve};

/// The test binary's one global recorder (a process has at most one).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the only recorder")
        })
        .clone()
}

fn gauge(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample: &&Sample| {
            sample.metric == metric
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| match sample.value {
            Value::Gauge(value) | Value::Counter(value) | Value::Untyped(value) => value,
            _ => f64::NAN,
        })
}

#[apply(every_store)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_gauges_and_the_layer_counters_parse(#[case] store: &str) {
    let handle = recorder();
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    let backend = coordinator.capabilities().backend;
    let p = prefix("metrics");
    let served = serve(coordinator.clone(), acting(&p).metrics(handle)).await;
    let session = coordinator
        .session_with(SessionOptions::default())
        .await
        .unwrap();
    let lock = format!("{p}lock");
    let guard = coordinator
        .locker(&session, &lock)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let jobs = format!("{p}jobs");
    let queue = coordinator.queue(&jobs).unwrap();
    for item in ["a", "b", "c"] {
        queue.enqueue(item).await.unwrap();
    }
    let (status, text) = get(&served, "metrics").await;
    assert_eq!(status, 200);
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("Prometheus's text format");
    let types: HashMap<_, _> = scrape
        .docs
        .iter()
        .map(|(name, help)| (name.as_str(), help.as_str()))
        .collect();
    assert!(types.contains_key("distsync_store_holders"), "{text}");
    assert_eq!(
        gauge(&scrape, "distsync_store_up", &[("backend", backend)]),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &scrape,
            "distsync_store_holders",
            &[("kind", "lock"), ("name", &lock)]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &scrape,
            "distsync_store_waiters",
            &[("kind", "lock"), ("name", &lock)]
        ),
        Some(0.0)
    );
    assert_eq!(
        gauge(&scrape, "distsync_store_queue_ready", &[("queue", &jobs)]),
        Some(3.0)
    );
    // The layer's counters of this process: the lock taken above among them.
    assert!(
        gauge(
            &scrape,
            "distsync_acquisitions_total",
            &[("backend", backend)]
        )
        .is_some_and(|count| count >= 1.0),
        "{text}"
    );
    assert!(!text.contains("://"), "a URL in the metrics: {text}");
    guard.unlock().await.unwrap();
    while queue.try_dequeue().await.unwrap().is_some() {}
    session.close().await.unwrap();
}
