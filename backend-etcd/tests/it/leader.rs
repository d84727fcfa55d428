//! Watches ask for a leader: a waiter attached to a member cut off from
//! the raft leader must not hang forever, and makes progress once the cluster has a
//! leader again.
//!
//! On the three-member cluster of `DISTSYNC_ETCD_CLUSTER_URL`, a client attached to
//! member 1 only watches a key and waits for a lock; members 2 and 3 are stopped, so
//! member 1 has no leader. Without `hasleader: true` its watches would stay open and
//! silent; with it, etcd cancels them after a few election timeouts. The members are
//! then started again, and the waiter, still in line, is granted the lock when the
//! holder releases it.
//!
//! And a release during a leader change: the leader member is stopped and
//! the holder unlocks at once; the unlock completes (retried through the election)
//! and the waiter is granted.

use crate::common;
use distsync_core::Primitives;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distsync_conformance::faults::cluster::EtcdCluster;
use distsync_conformance::faults::{Cluster, ETCD_CLUSTER_VAR};
use distsync_conformance::{connector, server_url};
use distsync_core::{Backend, Name, SessionOptions};
use distsync_etcd::{EtcdConfig, EtcdKv};
use distsync_kv::kv::{Kv, Txn, TxnOp};
use distsync_kv::recipes::KvBackend;
use futures::StreamExt;

use common::{unique, within};

/// The tests of this file stop members: one at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster and its URL, or `None` (skip).
fn cluster() -> Option<(EtcdCluster, String)> {
    let url = server_url(ETCD_CLUSTER_VAR)?;
    if let Err(reason) = EtcdCluster::available() {
        eprintln!("\n!!! SKIPPED: {reason}, so the cluster tests did not run.\n");
        return None;
    }
    let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
    Some((EtcdCluster::new(&url, connect).unwrap(), url))
}

/// Starts the stopped members again however the test ends.
struct Restart<'a> {
    cluster: &'a EtcdCluster,
    stopped: Vec<usize>,
}

impl Restart<'_> {
    async fn stop(&mut self, member: usize) {
        self.cluster.stop_member(member).await.unwrap();
        self.stopped.push(member);
    }

    async fn start_all(&mut self) {
        for member in std::mem::take(&mut self.stopped) {
            self.cluster.start_member(member).await.unwrap();
        }
    }
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let script = distsync_conformance::faults::cluster::servers_script();
        for member in self.stopped.drain(..) {
            let started = std::process::Command::new("bash")
                .arg(&script)
                .arg("start-member")
                .arg(member.to_string())
                .status();
            if !started.is_ok_and(|status| status.success()) {
                tracing::error!(member, "could not start the etcd member again");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_a_member_without_leader_does_not_hang_and_carries_on() {
    let Some((cluster, url)) = cluster() else {
        return;
    };
    let _one_at_a_time = CLUSTER.lock().await;
    let endpoints = EtcdConfig::parse(&url).unwrap().endpoints().to_vec();
    let lonely = EtcdKv::connect(&endpoints[..1]).await.unwrap();
    let backend = KvBackend::with_kv(lonely.clone(), "", distsync_etcd::capabilities());
    let options = SessionOptions::with_ttl(Duration::from_secs(60));

    let key = unique("leader-loss/watched");
    let put = lonely
        .txn(Txn::default().and_then(vec![TxnOp::put(&key, Bytes::from("v"), 0)]))
        .await
        .unwrap();
    let mut watch = lonely.watch(&key, false, put.revision + 1).await.unwrap();

    let name = Name::new(unique("leader-loss/lock")).unwrap();
    let holder_session = backend.session(options.clone()).await.unwrap();
    let waiter_session = backend.session(options).await.unwrap();
    let held = backend
        .locker(&holder_session, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let locker = Arc::new(backend.locker(&waiter_session, name).unwrap());
    let waiter = tokio::spawn({
        let locker = Arc::clone(&locker);
        async move { locker.lock().await }
    });
    within(Duration::from_secs(10), "the waiter to line up", async {
        while locker.contenders().await.unwrap() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let mut restart = Restart {
        cluster: &cluster,
        stopped: Vec::new(),
    };
    restart.stop(2).await;
    restart.stop(3).await;
    // Member 1 is alone: no leader. The watch must end rather than stay silent.
    within(
        Duration::from_secs(30),
        "the watch on a member without leader to end",
        async {
            if let Some(Ok(response)) = watch.next().await {
                panic!("the watched key was not changed, yet {response:?}");
            }
        },
    )
    .await;
    assert!(!waiter.is_finished(), "{:?}", waiter.await);

    restart.start_all().await;
    // The cluster has a leader again: the holder releases, the waiter gets the lock.
    within(
        Duration::from_secs(30),
        "the holder's release",
        held.unlock(),
    )
    .await
    .unwrap();
    let granted = within(Duration::from_secs(30), "the waiter's grant", waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(!granted.is_lost());
    granted.unlock().await.unwrap();
    holder_session.close().await.unwrap();
    waiter_session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_during_a_leader_change_completes() {
    let Some((cluster, url)) = cluster() else {
        return;
    };
    let _one_at_a_time = CLUSTER.lock().await;
    let backend = distsync_etcd::backend(&url).await.unwrap();
    let options = SessionOptions::with_ttl(Duration::from_secs(60));
    let name = Name::new(unique("leader-change/lock")).unwrap();
    let holder_session = backend.session(options.clone()).await.unwrap();
    let waiter_session = backend.session(options).await.unwrap();
    let held = backend
        .locker(&holder_session, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let locker = Arc::new(backend.locker(&waiter_session, name).unwrap());
    let waiter = tokio::spawn({
        let locker = Arc::clone(&locker);
        async move { locker.lock().await }
    });
    within(Duration::from_secs(10), "the waiter to line up", async {
        while locker.contenders().await.unwrap() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let leader = within(Duration::from_secs(10), "finding the leader", async {
        loop {
            if let Some(leader) = cluster.leader().await.unwrap() {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let mut restart = Restart {
        cluster: &cluster,
        stopped: Vec::new(),
    };
    restart.stop(leader).await;
    within(
        Duration::from_secs(30),
        "an unlock during the leader change",
        held.unlock(),
    )
    .await
    .unwrap();
    assert!(
        !holder_session.is_lost(),
        "a release that completed ended its session"
    );
    let granted = within(Duration::from_secs(30), "the waiter's grant", waiter)
        .await
        .unwrap()
        .unwrap();
    restart.start_all().await;
    granted.unlock().await.unwrap();
    holder_session.close().await.unwrap();
    waiter_session.close().await.unwrap();
}
