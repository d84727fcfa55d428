//! distsync's ZooKeeper barrier against Apache Curator's own `DistributedBarrier`,
//! run by the Java peer (interop/curator-peer, built by scripts/curator-peer.sh, its
//! launcher in `DISTSYNC_CURATOR_PEER`) on the same server (`DISTSYNC_ZOOKEEPER_URL`):
//! a barrier held from Rust holds a Java waiter back until Rust releases it, and the
//! reverse.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use std::process::Stdio;
use std::time::Duration;

use distsync_core::Name;
use distsync_zookeeper::ZkConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zookeeper_client as zk;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

/// How long a waiter must stay blocked to count as held back.
const SETTLE: Duration = Duration::from_millis(300);

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
                "\n!!! {var} ({what}) is not set: SKIPPING a Curator interop test. Run \
                 scripts/servers.sh up and eval \"$(scripts/servers.sh env)\". !!!\n"
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

/// A unique name per test run, so runs never meet.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("curator-interop/{name}-{}-{nanos}", std::process::id())
}

/// One run of the Curator peer in a child JVM, its output line by line.
struct JavaPeer {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JavaPeer {
    /// Starts `COMMAND SERVERS PATH [ARGS...]`.
    fn start(setup: &Setup, command: &str, path: &str, args: &[&str]) -> Self {
        let servers = setup.config.hosts().join(",");
        let mut child = Command::new(&setup.peer)
            .args([command, &servers, path])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the Curator peer starts");
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
        Self { child, lines }
    }

    /// Waits for the line `expected`.
    async fn said(&mut self, expected: &str) {
        let line = timeout(STEP, self.lines.recv())
            .await
            .expect("a line from the Curator peer in time")
            .expect("the Curator peer ended early (see its stderr)");
        assert_eq!(line, expected);
    }

    /// Asserts that the peer stays silent for [`SETTLE`].
    async fn stays_silent(&mut self, why: &str) {
        if let Ok(line) = timeout(SETTLE, self.lines.recv()).await {
            panic!("the Curator peer said {line:?} although {why}");
        }
    }

    /// Waits for the peer to exit with success.
    async fn exits(mut self) {
        let status = timeout(STEP, self.child.wait())
            .await
            .expect("the Curator peer exits")
            .unwrap();
        assert!(status.success(), "the Curator peer exited with {status}");
    }
}

/// A plain ZooKeeper client, to watch the recipe's nodes from outside.
async fn observer(setup: &Setup) -> zk::Client {
    zk::Client::connect(&setup.config.hosts().join(","))
        .await
        .expect("an observer's connection")
}

/// The barrier's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    format!("{}/barrier/{name}", setup.config.root())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_barrier_holds_a_curator_waiter_until_released() {
    let Some(setup) = setup() else { return };
    let name = unique("barrier-rust-holds");
    let coordinator = distsync_zookeeper::connect(&setup.url).await.unwrap();
    let barrier = coordinator
        .backend()
        .barrier(Name::new(&name).unwrap())
        .unwrap();
    barrier.hold().await.unwrap();
    let mut java = JavaPeer::start(&setup, "barrier-wait", &node(&setup, &name), &[]);
    java.said("started").await;
    java.stays_silent("the Rust barrier is held").await;
    barrier.release().await.unwrap();
    java.said("passed").await;
    java.exits().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_barrier_holds_a_rust_waiter_until_removed() {
    let Some(setup) = setup() else { return };
    let name = unique("barrier-java-holds");
    let zk = observer(&setup).await;
    let mut set = JavaPeer::start(&setup, "barrier-set", &node(&setup, &name), &[]);
    set.said("set").await;
    set.exits().await;
    let coordinator = distsync_zookeeper::connect(&setup.url).await.unwrap();
    let barrier = coordinator
        .backend()
        .barrier(Name::new(&name).unwrap())
        .unwrap();
    let waiter = tokio::spawn(async move { barrier.wait().await });
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "Rust passed Curator's barrier");
    let mut remove = JavaPeer::start(&setup, "barrier-remove", &node(&setup, &name), &[]);
    remove.said("removed").await;
    remove.exits().await;
    timeout(STEP, waiter)
        .await
        .expect("Rust passes once Curator removed the barrier")
        .unwrap()
        .unwrap();
    assert!(
        zk.check_stat(&node(&setup, &name)).await.unwrap().is_none(),
        "the barrier's node is gone"
    );
}
