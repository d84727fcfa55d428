//! State survives an etcd restart, and live clients ride it out: a private etcd (the
//! Debian `etcd` binary, on free loopback ports, data in a temporary directory) is
//! stopped and started again under a connected backend.
//!
//! A private server, because restarting the shared test server would disturb every
//! other test using it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::kv::{Kv, Range};
use distsync_core::{Backend, Isolation, Name, SessionOptions};
use distsync_etcd::EtcdKv;
use tokio::process::{Child, Command};

use common::{eventually, unique, within};

const ETCD: &str = "/usr/bin/etcd";
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An etcd of this test's own.
struct PrivateEtcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl PrivateEtcd {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("distsync-etcd-restart"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts the server (on the same data directory every time) and waits until it
    /// answers.
    async fn start(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "restart", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("restart={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let endpoint = self.endpoint();
        eventually(WAIT, "the private etcd to answer", || async {
            EtcdKv::connect(&[endpoint.as_str()]).await.ok().map(drop)
        })
        .await;
    }

    /// Stops the server (SIGTERM, as an operator would) and waits for it to exit.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        within(WAIT, "etcd to exit", child.wait()).await.unwrap();
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn etcd_installed() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{ETCD} is missing but CI=true: install Debian's etcd-server");
    }
    eprintln!("\n!!! SKIPPED: {ETCD} is missing (Debian package etcd-server), so the restart test did not run.\n");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_live_clients_survive_a_restart() {
    if !etcd_installed() {
        return;
    }
    let mut server = PrivateEtcd::new();
    server.start().await;
    let backend = distsync_etcd::backend(&format!("etcd://{}/app", server.endpoint()))
        .await
        .unwrap();

    // Durable state: a queue, a held barrier, an STM key.
    let queue = backend.queue(Name::new("jobs").unwrap()).unwrap();
    for item in ["a", "b", "c"] {
        queue.enqueue(Bytes::from(item)).await.unwrap();
    }
    let barrier = backend.barrier(Name::new("gate").unwrap()).unwrap();
    barrier.hold().await.unwrap();
    let stm = backend.stm().unwrap();
    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        tx.put("accounts/x", "100");
        Ok(())
    })
    .await
    .unwrap();

    // Live clients: a holder (its session renewed across the restart) and a waiter
    // (its watch broken by the restart).
    let ttl = Duration::from_secs(10);
    let holder = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let waiter_session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let lock = Name::new("lock").unwrap();
    let held = backend
        .locker(&holder, lock.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter_locker = backend.locker(&waiter_session, lock).unwrap();
    let waiter = tokio::spawn(async move { waiter_locker.lock().await });
    // Stop only once the waiter is queued: a transaction cut off mid-flight fails
    // with a connection error (it may or may not have been applied), as in Go.
    eventually(WAIT, "the waiter to queue", || async {
        let queued = backend
            .kv()
            .range(Range::prefix("app/lock/"))
            .await
            .unwrap();
        (queued.count == 2).then_some(())
    })
    .await;
    let barrier_waiter = {
        let barrier = backend.barrier(Name::new("gate").unwrap()).unwrap();
        tokio::spawn(async move { barrier.wait().await })
    };

    server.stop().await;
    server.start().await;

    // Everything is still there.
    assert_eq!(queue.len().await.unwrap(), 3);
    let balance = stm
        .atomically(Isolation::SerializableSnapshot, |tx| async move {
            tx.get("accounts/x").await
        })
        .await
        .unwrap();
    assert_eq!(balance, Some(Bytes::from("100")));
    assert!(!held.is_lost(), "the holder's lease survived the restart");
    assert!(!holder.is_lost());
    if waiter.is_finished() {
        panic!(
            "the lock is still held, yet the waiter returned {:?}",
            waiter.await
        );
    }
    assert!(!barrier_waiter.is_finished(), "the barrier is still held");

    // The waiters ride out the restart.
    held.unlock().await.unwrap();
    let granted = within(WAIT, "the waiter to get the lock", waiter)
        .await
        .unwrap()
        .unwrap();
    barrier.release().await.unwrap();
    within(WAIT, "the barrier waiter to pass", barrier_waiter)
        .await
        .unwrap()
        .unwrap();
    for item in ["a", "b", "c"] {
        assert_eq!(queue.dequeue().await.unwrap(), Bytes::from(item));
    }
    granted.unlock().await.unwrap();
    holder.close().await.unwrap();
    waiter_session.close().await.unwrap();
}
