//! Every lease of one client is renewed on one shared keepalive stream: counted at a
//! private etcd (`distsync_conformance::faults::private`, so that no other test moves
//! its counters) from its own `/metrics`, which counts the `LeaseKeepAlive` streams it
//! started and the renewals it received.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use distsync_conformance::faults::proxy::{rewrite_url, PartitionMode, Proxy};
use distsync_core::{Backend, Error, KeepAlive, SessionOptions};
use distsync_kv::kv::Kv;

use common::{etcd_metric, eventually, private_etcd, single_endpoint, within};

const WAIT: Duration = Duration::from_secs(30);

/// Keepalive streams etcd has started.
async fn streams_started(endpoint: &str) -> f64 {
    etcd_metric(
        endpoint,
        "grpc_server_started_total",
        &[r#"grpc_method="LeaseKeepAlive""#],
    )
    .await
}

/// Keepalive streams etcd has seen end.
async fn streams_ended(endpoint: &str) -> f64 {
    etcd_metric(
        endpoint,
        "grpc_server_handled_total",
        &[r#"grpc_method="LeaseKeepAlive""#],
    )
    .await
}

/// Keepalive requests etcd has received, on every stream.
async fn renewals_received(endpoint: &str) -> f64 {
    etcd_metric(
        endpoint,
        "grpc_server_msg_received_total",
        &[r#"grpc_method="LeaseKeepAlive""#],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_renews_on_one_stream() {
    const SESSIONS: usize = 20;
    const RENEWALS: usize = 3;
    let Some(server) = private_etcd().await else {
        return;
    };
    let endpoint = single_endpoint(server.url());
    let backend = distsync_etcd::backend(server.url()).await.unwrap();
    let streams_before = streams_started(&endpoint).await;
    let renewals_before = renewals_received(&endpoint).await;

    // TTL 3 s: each session renews every second.
    let ttl = Duration::from_secs(3);
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(
            backend
                .session(SessionOptions::with_ttl(ttl))
                .await
                .unwrap(),
        );
    }
    let wanted = (SESSIONS * RENEWALS) as f64;
    eventually(WAIT, "every session to renew a few times", || async {
        (renewals_received(&endpoint).await - renewals_before >= wanted).then_some(())
    })
    .await;

    let streams = streams_started(&endpoint).await - streams_before;
    assert!(
        (1.0..=2.0).contains(&streams),
        "{SESSIONS} sessions renewing {RENEWALS} times each started {streams} keepalive \
         streams, not one"
    );
    for session in &sessions {
        assert!(!session.is_lost(), "session {} was lost", session.id());
    }
    // Every lease is alive at etcd itself.
    let mut leases = backend.kv().store().client().lease_client();
    let listed = leases.leases().await.unwrap();
    let ids: Vec<i64> = listed.leases().iter().map(|lease| lease.id()).collect();
    assert!(ids.len() >= SESSIONS, "{} leases at etcd", ids.len());
    for id in ids {
        let ttl = leases.time_to_live(id, None).await.unwrap().ttl();
        assert!(ttl > 0, "lease {id:x} is not alive at etcd (TTL {ttl})");
    }
    for session in sessions {
        session.close().await.unwrap();
    }

    // The stream (and the task that owns it) ends with the client.
    let ended_before = streams_ended(&endpoint).await;
    drop(leases);
    drop(backend);
    eventually(
        WAIT,
        "the keepalive stream to end with its client",
        || async { (streams_ended(&endpoint).await > ended_before).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_renews_as_gone_and_the_stream_carries_on() {
    let Some(server) = private_etcd().await else {
        return;
    };
    let endpoint = single_endpoint(server.url());
    let backend = distsync_etcd::backend(server.url()).await.unwrap();
    let kv = Arc::clone(backend.kv());
    let streams_before = streams_started(&endpoint).await;

    let ttl = Duration::from_secs(30);
    let kept = kv.lease_grant(ttl).await.unwrap();
    let revoked = kv.lease_grant(ttl).await.unwrap();
    assert_eq!(kv.lease_keep_alive(kept).await.unwrap(), KeepAlive::Renewed);
    assert_eq!(
        kv.lease_keep_alive(revoked).await.unwrap(),
        KeepAlive::Renewed
    );
    // Revoked by another client: this one learns it from the renewal alone.
    let other = distsync_etcd::backend(server.url()).await.unwrap();
    other
        .kv()
        .store()
        .client()
        .lease_client()
        .revoke(revoked)
        .await
        .unwrap();
    assert_eq!(kv.lease_keep_alive(revoked).await.unwrap(), KeepAlive::Gone);
    assert_eq!(kv.lease_keep_alive(kept).await.unwrap(), KeepAlive::Renewed);
    let streams = streams_started(&endpoint).await - streams_before;
    assert_eq!(
        streams, 1.0,
        "four renewals, one answered Gone, on one stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_renewal_discards_the_stream() {
    let Some(server) = private_etcd().await else {
        return;
    };
    let endpoint = single_endpoint(server.url());
    let proxy = Proxy::start(endpoint.clone()).await.unwrap();
    let through = rewrite_url(server.url(), &[proxy.address()]).unwrap();
    // A short request timeout, so the unanswered renewal gives up quickly.
    let backend = distsync_etcd::backend(&format!("{through}?timeout=500ms"))
        .await
        .unwrap();
    let kv = Arc::clone(backend.kv());
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let streams_before = streams_started(&endpoint).await;
    assert_eq!(
        kv.lease_keep_alive(lease).await.unwrap(),
        KeepAlive::Renewed
    );

    proxy.set(PartitionMode::Silent);
    let error = within(
        Duration::from_secs(10),
        "the unanswered renewal to give up",
        kv.lease_keep_alive(lease),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");

    // The held bytes now reach etcd and the old stream would answer again; the next
    // renewal goes on a new stream all the same, and is answered.
    proxy.heal();
    eventually(WAIT, "a renewal after the partition healed", || async {
        kv.lease_keep_alive(lease)
            .await
            .ok()
            .filter(|outcome| *outcome == KeepAlive::Renewed)
    })
    .await;
    let streams = streams_started(&endpoint).await - streams_before;
    assert!(
        streams >= 2.0,
        "the renewal after the timeout reused the discarded stream ({streams} started)"
    );
}
