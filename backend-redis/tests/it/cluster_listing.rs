//! Listings across the masters of a Redis Cluster (`DISTSYNC_REDIS_CLUSTER_URL`;
//! skipped loudly when unset, a failure under `CI=true`): `status`, migration exports
//! and group member lists read every master, not the third of the names one node
//! serves (see `src/scan.rs`). The conformance runner's `redis-cluster` column runs
//! the group, shard and migration cases on top.

use std::collections::BTreeSet;
use std::time::Duration;

use distsync_conformance::{check_counter_status, check_session_expiry, check_status};
use distsync_core::status::LineKind;
use distsync_core::{Backend, Coordinator, Isolation, SessionOptions};

use crate::cluster::{cluster_url, lock_all, master_of, names, own_namespace, raw};

/// The masters serving the names of [`names`] under `namespace`, by id: the test
/// means something only if they are more than one.
async fn masters_of_names(url: &str, namespace: &str) -> BTreeSet<String> {
    let mut conn = raw(url).await;
    let mut masters = BTreeSet::new();
    for name in names() {
        masters.insert(master_of(&mut conn, &format!("{{{namespace}{name}}}")).await);
    }
    masters
}

/// A backend on the cluster under a namespace of its own (`tag`), whose names of
/// [`names`] are served by more than one master; `None` when no cluster is set.
async fn spread_backend(tag: &str) -> Option<distsync_redis::RedisBackend> {
    let url = own_namespace(&cluster_url()?, tag);
    let backend = distsync_redis::backend(&url).await.unwrap();
    let masters = masters_of_names(&url, backend.namespace()).await;
    assert!(
        masters.len() > 1,
        "the names sit on one master: {masters:?}"
    );
    Some(backend)
}

#[tokio::test]
async fn status_lists_the_holds_of_every_master() {
    let Some(backend) = spread_backend("status-spread").await else {
        return;
    };
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(15)))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let report = backend.status("").await.unwrap();
    for name in names() {
        let line = report
            .line(LineKind::Lock, name.as_str())
            .unwrap_or_else(|| panic!("{name} is not listed: {report:#?}"));
        assert_eq!(line.holders.len(), 1, "{report:#?}");
        assert_eq!(
            line.holders[0].session.as_deref(),
            Some(session.id().to_string().as_str())
        );
    }
    assert_eq!(report.lines.len(), names().len(), "{report:#?}");
    for guard in guards {
        guard.unlock().await.unwrap();
    }
    session.close().await.unwrap();
    assert!(backend.status("").await.unwrap().is_empty());
}

/// The check every backend's status tests run (holders, waiters in order, leaders,
/// queues, barriers; counters, latches and rate limiters), on the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn status_on_a_cluster_passes_the_common_checks() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "status-checks");
    let coordinator = distsync::connect(&url).await.unwrap();
    let other = distsync::connect(&url).await.unwrap();
    if let Err(error) = check_status(&coordinator, &other, "app/").await {
        panic!("{error}");
    }
    if let Err(error) = check_counter_status(&coordinator, "app/").await {
        panic!("{error}");
    }
}

/// A holder's session time left is reported under Cluster too, where the session key
/// lies in another slot than the lock: its `PTTL`, read in the session's own slot.
#[tokio::test(flavor = "multi_thread")]
async fn status_on_a_cluster_reports_a_holders_session_time_left() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "status-expiry");
    let coordinator = distsync::connect(&url).await.unwrap();
    let left = check_session_expiry(&coordinator, "app/")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(left.is_some(), "no session time left reported");
}

#[tokio::test]
async fn an_export_reads_the_state_of_every_master() {
    let Some(backend) = spread_backend("export-spread").await else {
        return;
    };
    let coordinator = Coordinator::new(backend);
    for (n, name) in names().into_iter().enumerate() {
        coordinator
            .queue(name.as_str())
            .unwrap()
            .enqueue(format!("item {n}"))
            .await
            .unwrap();
        coordinator
            .counter(&format!("counters/{n}"))
            .unwrap()
            .add(i64::try_from(n).unwrap() + 1)
            .await
            .unwrap();
    }
    coordinator
        .stm()
        .unwrap()
        .atomically(Isolation::SerializableSnapshot, |tx| async move {
            tx.put("config/a", "1");
            Ok(())
        })
        .await
        .unwrap();
    let snapshot = coordinator.backend().export().await.unwrap();
    assert_eq!(snapshot.queues.len(), names().len(), "{snapshot:#?}");
    for (n, name) in names().into_iter().enumerate() {
        let items = &snapshot.queues[&name];
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].item, format!("item {n}").as_bytes());
    }
    assert_eq!(snapshot.counters.len(), names().len(), "{snapshot:#?}");
    assert_eq!(snapshot.stm.len(), 1, "{snapshot:#?}");
    assert!(snapshot.active_holds.is_empty());
}
