//! The backend keeps working with one member of a three-member cluster down
//! (`DISTSYNC_ETCD_CLUSTER_URL`, members stopped and started with
//! `scripts/servers.sh stop-member N` / `start-member N`).
//!
//! The member stopped is the raft leader, the hardest case: requests balanced to it
//! fail to connect and are retried on the others, watches served by it break and are
//! re-established, and the cluster elects a new leader while a session, a lock holder
//! and a lock waiter are live.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_core::{Backend, Name, SessionOptions};
use distsync_etcd::etcd_client::Client;
use distsync_etcd::{EtcdBackend, EtcdConfig};

use common::{server_url, unique, within};

const WAIT: Duration = Duration::from_secs(20);

fn servers_script() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/servers.sh");
    if script.exists() {
        return Some(script);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing but CI=true", script.display());
    }
    eprintln!(
        "\n!!! SKIPPED: {} is missing, so members cannot be stopped.\n",
        script.display()
    );
    None
}

/// Runs `servers.sh <command> <member>` (at most two minutes); panics if it fails.
fn servers(script: &PathBuf, command: &str, member: usize) {
    let mut child = Command::new("bash")
        .arg(script)
        .args([command, &member.to_string()])
        .spawn()
        .expect("servers.sh runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("servers.sh can be waited for") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("servers.sh {command} {member} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "servers.sh {command} {member} failed");
}

/// Starts the stopped member again however the test ends.
struct Restart {
    script: PathBuf,
    member: usize,
}

impl Drop for Restart {
    fn drop(&mut self) {
        servers(&self.script, "start-member", self.member);
    }
}

/// Which member (1-based, in URL order, as servers.sh numbers them) leads the
/// cluster, asking the members in `endpoints` that answer.
async fn leader_member(endpoints: &[String]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leader = None;
    for endpoint in endpoints {
        let status = match Client::connect([endpoint], None).await {
            Ok(mut client) => tokio::time::timeout(Duration::from_secs(2), client.status())
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        match status {
            Some(status) => {
                ids.push(status.header().map(|h| h.member_id()));
                if status.leader() != 0 {
                    leader = Some(status.leader());
                }
            }
            None => ids.push(None),
        }
    }
    let leader = leader?;
    ids.iter().position(|id| *id == Some(leader)).map(|i| i + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_working_with_the_leader_member_down() {
    let Some(url) = server_url("DISTSYNC_ETCD_CLUSTER_URL", "the etcd cluster test") else {
        return;
    };
    let Some(script) = servers_script() else {
        return;
    };
    let config = EtcdConfig::parse(&url).unwrap();
    assert_eq!(config.endpoints().len(), 3, "a three-member cluster URL");
    let namespace = unique("distsync-test-cluster");
    let backend: EtcdBackend = distsync_etcd::backend(&format!(
        "etcd://{}/{namespace}",
        config.endpoints().join(",")
    ))
    .await
    .unwrap();

    // Live state across the outage: a session (min TTL, so a missed renewal shows),
    // a holder, and a waiter queued behind it.
    let ttl = distsync_etcd::MIN_SESSION_TTL;
    let holder_session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let waiter_session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let lock = Name::new("lock").unwrap();
    let held = backend
        .locker(&holder_session, lock.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter_locker = backend.locker(&waiter_session, lock.clone()).unwrap();
    let waiter = tokio::spawn(async move { waiter_locker.lock().await });
    let queue = backend.queue(Name::new("queue").unwrap()).unwrap();
    queue.enqueue(Bytes::from("before")).await.unwrap();

    let member = within(WAIT, "a leader", async {
        loop {
            if let Some(member) = leader_member(config.endpoints()).await {
                return member;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eprintln!("stopping member {member}, the leader");
    servers(&script, "stop-member", member);
    let restart = Restart {
        script: script.clone(),
        member,
    };
    let live: Vec<String> = config
        .endpoints()
        .iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != member)
        .map(|(_, endpoint)| endpoint.clone())
        .collect();
    within(WAIT, "a new leader", async {
        while leader_member(&live).await.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The waiter's watch may have been on the stopped member; releasing must still
    // reach it.
    assert!(!waiter.is_finished());
    held.unlock().await.unwrap();
    let granted = within(WAIT, "the waiter to get the lock", waiter)
        .await
        .unwrap()
        .unwrap();
    granted.unlock().await.unwrap();

    // Many requests, a third of them balanced to the stopped member at first.
    for round in 0..20 {
        let session = backend
            .session(SessionOptions::with_ttl(ttl))
            .await
            .unwrap();
        let guard = backend
            .locker(&session, lock.clone())
            .unwrap()
            .lock()
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        guard.unlock().await.unwrap();
        queue
            .enqueue(Bytes::from(format!("{round}")))
            .await
            .unwrap();
        session.close().await.unwrap();
    }
    assert_eq!(queue.dequeue().await.unwrap(), Bytes::from("before"));
    for round in 0..20 {
        assert_eq!(
            queue.dequeue().await.unwrap(),
            Bytes::from(format!("{round}"))
        );
    }

    // Sessions from before the outage were renewed throughout: with a 2 s TTL, one
    // missed renewal window would have lost them.
    tokio::time::sleep(ttl * 2).await;
    assert!(
        !holder_session.is_lost(),
        "the holder's session survived the outage"
    );
    assert!(
        !waiter_session.is_lost(),
        "the waiter's session survived the outage"
    );

    drop(restart);
    within(WAIT, "all three members to agree on a leader", async {
        while leader_member(config.endpoints()).await.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let guard = backend
        .locker(&holder_session, lock)
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.unlock().await.unwrap();
    holder_session.close().await.unwrap();
    waiter_session.close().await.unwrap();
}
