//! distsync's ZooKeeper double barrier against Apache Curator's own
//! `DistributedDoubleBarrier`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): Rust and Java participants of one barrier enter
//! together (none before the last has arrived) and leave together (none before the
//! last has left).
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use std::num::NonZeroUsize;
use std::process::Stdio;
use std::time::Duration;

use distsync_core::{DoubleBarrier, Name, Session};
use distsync_zookeeper::ZkConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
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
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JavaPeer {
    /// Starts `COMMAND SERVERS PATH [ARGS...]`.
    fn start(setup: &Setup, command: &str, path: &str, args: &[&str]) -> Self {
        let servers = setup.config.hosts().join(",");
        let mut child = Command::new(&setup.peer)
            .args([command, &servers, path])
            .args(args)
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
        Self {
            child,
            stdin,
            lines,
        }
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

    /// Sends a line to the peer's standard input.
    async fn tell(&mut self) {
        let mut stdin = self.stdin.take().expect("stdin still open");
        stdin.write_all(b"go\n").await.unwrap();
        drop(stdin);
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

/// The double barrier's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    format!("{}/double_barrier/{name}", setup.config.root())
}

/// A Rust participant: its own coordinator and session.
async fn rust_side(
    setup: &Setup,
    name: &str,
    count: usize,
) -> (distsync_core::Coordinator, Session, Box<dyn DoubleBarrier>) {
    let coordinator = distsync_zookeeper::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let barrier = coordinator
        .backend()
        .double_barrier(
            &session,
            Name::new(name).unwrap(),
            NonZeroUsize::new(count).unwrap(),
        )
        .unwrap();
    (coordinator, session, barrier)
}

/// The participants' nodes under `path` (`ready` aside).
async fn participants(zk: &zk::Client, path: &str) -> usize {
    match zk.list_children(path).await {
        Ok(children) => children.iter().filter(|child| *child != "ready").count(),
        Err(zk::Error::NoNode) => 0,
        Err(error) => panic!("listing {path}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_curator_participants_enter_and_leave_together() {
    let Some(setup) = setup() else { return };
    let name = unique("double-barrier");
    let path = node(&setup, &name);
    let zk = observer(&setup).await;
    // Three participants: Curator first, then two from Rust.
    let mut java = JavaPeer::start(&setup, "double-barrier", &path, &["3"]);
    java.said("started").await;
    let deadline = tokio::time::Instant::now() + STEP;
    while participants(&zk, &path).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Curator never entered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_c1, s1, first) = rust_side(&setup, &name, 3).await;
    let (_c2, s2, second) = rust_side(&setup, &name, 3).await;
    let first = std::sync::Arc::<dyn DoubleBarrier>::from(first);
    let entering = {
        let first = first.clone();
        tokio::spawn(async move { first.enter().await })
    };
    java.stays_silent("two of three participants entered").await;
    assert!(!entering.is_finished(), "Rust entered with two of three");
    second.enter().await.unwrap();
    timeout(STEP, entering)
        .await
        .expect("the first Rust participant enters with the third")
        .unwrap()
        .unwrap();
    java.said("entered").await;

    // Leaving: both Rust participants start; neither passes while Curator is inside.
    let leaving = {
        let first = first.clone();
        tokio::spawn(async move { first.leave().await })
    };
    let second = std::sync::Arc::<dyn DoubleBarrier>::from(second);
    let leaving_second = {
        let second = second.clone();
        tokio::spawn(async move { second.leave().await })
    };
    tokio::time::sleep(SETTLE).await;
    assert!(
        !leaving.is_finished() && !leaving_second.is_finished(),
        "a Rust participant left while Curator's was inside"
    );
    java.tell().await;
    java.said("left").await;
    java.exits().await;
    for leave in [leaving, leaving_second] {
        timeout(STEP, leave)
            .await
            .expect("the Rust participants leave with Curator's")
            .unwrap()
            .unwrap();
    }
    assert_eq!(participants(&zk, &path).await, 0);
    s1.close().await.unwrap();
    s2.close().await.unwrap();
}
