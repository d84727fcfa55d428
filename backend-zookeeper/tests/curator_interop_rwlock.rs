//! distsync's ZooKeeper read-write lock against Apache Curator's own
//! `InterProcessReadWriteLock`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): a Java writer keeps Rust readers and writers out, Rust
//! and Java readers share the lock while a Java writer waits for both, and a Java
//! reader keeps a Rust writer out.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use std::process::Stdio;
use std::time::Duration;

use distsync_core::{Coordinator, RwLock, Session};
use distsync_zookeeper::ZkConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zookeeper_client as zk;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"))
}

/// The value of `var`, or `None` after a loud skip notice (a failure under `CI=true`).
fn required(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            assert!(!ci(), "CI=true but {var} ({what}) is not set");
            eprintln!(
                "\n!!! {var} ({what}) is not set: SKIPPING the Curator read-write lock interop \
                 test. Run scripts/servers.sh up and eval \"$(scripts/servers.sh env)\". !!!\n"
            );
            None
        }
    }
}

struct Setup {
    url: String,
    peer: String,
    config: ZkConfig,
}

fn setup() -> Option<Setup> {
    let url = required("DISTSYNC_ZOOKEEPER_URL", "the ZooKeeper server")?;
    let peer = required("DISTSYNC_CURATOR_PEER", "the Curator peer's launcher")?;
    let config = url.parse().expect("DISTSYNC_ZOOKEEPER_URL parses");
    Some(Setup { url, peer, config })
}

/// A unique lock name per test run, so runs never meet.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("curator-interop/{name}-{}-{nanos}", std::process::id())
}

/// The lock's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    format!("{}/rwlock/{name}", setup.config.root())
}

/// One Curator `InterProcessReadWriteLock` contender in a child JVM.
struct JavaHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JavaHolder {
    /// Starts `read|write SERVERS PATH HOLD_MS` and waits for its `started` line.
    async fn start(setup: &Setup, mode: &str, name: &str, hold_ms: i64) -> Self {
        let mut child = Command::new(&setup.peer)
            .args([
                mode,
                &setup.config.hosts().join(","),
                &node(setup, name),
                &hold_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the Curator peer starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut holder = Self {
            child,
            stdin,
            lines,
        };
        assert_eq!(holder.next_line().await, "started");
        holder
    }

    async fn next_line(&mut self) -> String {
        timeout(STEP, self.lines.recv())
            .await
            .expect("a line from the Curator peer in time")
            .expect("the Curator peer ended early (see its stderr)")
    }

    /// Waits for a reader's `granted`.
    async fn granted_read(&mut self) {
        let line = self.next_line().await;
        assert_eq!(line, "granted", "unexpected line {line:?}");
    }

    /// Waits for a writer's `granted <czxid>`; returns the czxid.
    async fn granted_write(&mut self) -> u64 {
        let line = self.next_line().await;
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("granted"), "unexpected line {line:?}");
        words
            .next()
            .and_then(|czxid| czxid.parse().ok())
            .expect("a czxid")
    }

    /// Whether a line has arrived (without waiting).
    fn has_spoken(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Tells a holder started with a negative HOLD_MS to release.
    async fn release(&mut self) {
        let mut stdin = self.stdin.take().expect("stdin still open");
        stdin.write_all(b"release\n").await.unwrap();
        drop(stdin);
    }

    async fn released(mut self) {
        assert_eq!(self.next_line().await, "released");
        let status = timeout(STEP, self.child.wait())
            .await
            .expect("the Curator peer exits")
            .unwrap();
        assert!(status.success(), "the Curator peer exited with {status}");
    }
}

/// A Rust contender: its own coordinator and session.
async fn rust_side(setup: &Setup, name: &str) -> (Coordinator, Session, Box<dyn RwLock>) {
    let coordinator = distsync_zookeeper::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let lock = coordinator
        .backend()
        .rwlock(&session, distsync_core::Name::new(name).unwrap())
        .unwrap();
    (coordinator, session, lock)
}

/// A plain ZooKeeper client, to watch the recipe's nodes from outside.
async fn observer(setup: &Setup) -> zk::Client {
    zk::Client::connect(&setup.config.hosts().join(","))
        .await
        .expect("an observer's connection")
}

/// Waits, with a deadline, until the node at `path` has `count` children.
async fn until_children(client: &zk::Client, path: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = match client.list_children(path).await {
            Ok(children) => children.len(),
            Err(zk::Error::NoNode) => 0,
            Err(error) => panic!("listing {path}: {error}"),
        };
        if now == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} has {now} children, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_writer_keeps_rust_readers_and_writers_out() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-java-writes");
    let zk = observer(&setup).await;
    let mut java = JavaHolder::start(&setup, "write", &name, -1).await;
    let java_token = java.granted_write().await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "read beside Curator's writer"
    );
    assert!(
        lock.try_write().await.unwrap().is_none(),
        "write beside Curator's writer"
    );
    let reader = {
        let (coordinator, session, lock) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard = lock.read().await.unwrap();
            (guard, session, coordinator)
        })
    };
    until_children(&zk, &node(&setup, &name), 2).await;
    assert!(!reader.is_finished(), "Rust read while Curator writes");
    java.release().await;
    java.released().await;
    let (guard, reader_session, _reader_coordinator) = timeout(STEP, reader)
        .await
        .expect("the Rust reader granted after Curator's writer released")
        .unwrap();
    guard.unlock().await.unwrap();
    let write = lock.write().await.unwrap();
    assert!(write.token().get() > java_token);
    write.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 0).await;
    reader_session.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_curator_readers_share_while_a_curator_writer_waits_for_both() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-shared");
    let zk = observer(&setup).await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    let read = lock.read().await.unwrap();
    // Curator's reader is granted beside the Rust reader.
    let mut java_reader = JavaHolder::start(&setup, "read", &name, -1).await;
    java_reader.granted_read().await;
    let mut java_writer = JavaHolder::start(&setup, "write", &name, 0).await;
    until_children(&zk, &node(&setup, &name), 3).await;
    // A waiting writer holds back later readers, Rust's too.
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "a Rust reader passed Curator's waiting writer"
    );
    read.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 2).await;
    assert_eq!(
        java_writer.has_spoken(),
        None,
        "Curator's writer granted while Curator's reader holds"
    );
    java_reader.release().await;
    java_reader.released().await;
    let _token = java_writer.granted_write().await;
    java_writer.released().await;
    until_children(&zk, &node(&setup, &name), 0).await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_reader_keeps_a_rust_writer_out_until_it_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("rwlock-java-reads");
    let zk = observer(&setup).await;
    let mut java = JavaHolder::start(&setup, "read", &name, -1).await;
    java.granted_read().await;
    let (_coordinator, session, lock) = rust_side(&setup, &name).await;
    let writer = {
        let (coordinator, session, lock) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let guard = lock.write().await.unwrap();
            (guard, session, coordinator)
        })
    };
    until_children(&zk, &node(&setup, &name), 2).await;
    assert!(!writer.is_finished(), "Rust wrote while Curator reads");
    java.release().await;
    java.released().await;
    let (guard, writer_session, _writer_coordinator) = timeout(STEP, writer)
        .await
        .expect("the Rust writer granted after Curator's reader released")
        .unwrap();
    assert!(
        lock.try_read().await.unwrap().is_none(),
        "read beside Rust's writer"
    );
    guard.unlock().await.unwrap();
    until_children(&zk, &node(&setup, &name), 0).await;
    writer_session.close().await.unwrap();
    session.close().await.unwrap();
}
