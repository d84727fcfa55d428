//! What the Curator interop tests share: the servers they need (skipped loudly when
//! unset, a failure under `CI=true`), unique names, a plain ZooKeeper observer, and
//! the Java peer (interop/curator-peer, its launcher in `DISTSYNC_CURATOR_PEER`) run
//! as a child process whose output is read line by line.

#![allow(dead_code)] // each test binary uses its own part

use std::process::Stdio;
use std::time::Duration;

use distsync_zookeeper::ZkConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zookeeper_client as zk;

/// How long any one step may take before the test fails.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// How long a Curator waiter must stay silent to count as held back.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);

/// The ZooKeeper server and the Curator peer's launcher.
pub(crate) struct Setup {
    pub(crate) url: String,
    pub(crate) peer: String,
    pub(crate) config: ZkConfig,
}

/// The setup from the environment, or `None` after a loud skip notice.
pub(crate) fn setup() -> Option<Setup> {
    let url = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let peer = distsync_conformance::server_url("DISTSYNC_CURATOR_PEER")?;
    let config = url.parse().expect("DISTSYNC_ZOOKEEPER_URL parses");
    Some(Setup { url, peer, config })
}

/// A unique name per test run, so runs never meet.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("curator-interop/{name}-{}-{nanos}", std::process::id())
}

/// The node of the primitive `kind` (a path segment of backend-zookeeper's layout:
/// `lock`, `rwlock`, `semaphore`, `barrier`, `double_barrier`) named `name`, as
/// Curator is given it.
pub(crate) fn node(setup: &Setup, kind: &str, name: &str) -> String {
    format!("{}/{kind}/{name}", setup.config.root())
}

/// A plain ZooKeeper client, to watch the recipe's nodes from outside.
pub(crate) async fn observer(setup: &Setup) -> zk::Client {
    zk::Client::connect(&setup.config.hosts().join(","))
        .await
        .expect("an observer's connection")
}

/// Waits, with a deadline, until the node at `path` has `count` children.
pub(crate) async fn until_children(client: &zk::Client, path: &str, count: usize) {
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

/// One run of the Curator peer in a child JVM, its output line by line.
pub(crate) struct JavaPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JavaPeer {
    /// Starts `COMMAND SERVERS PATH [ARGS...]`.
    pub(crate) fn start(setup: &Setup, command: &str, path: &str, args: &[&str]) -> Self {
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

    /// Starts a holder (`COMMAND SERVERS PATH [ARGS...] HOLD_MS`) and waits for its
    /// `started` line. A negative `hold_ms` holds until [`Self::release`].
    pub(crate) async fn holder(
        setup: &Setup,
        command: &str,
        path: &str,
        args: &[&str],
        hold_ms: i64,
    ) -> Self {
        let hold = hold_ms.to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.push(&hold);
        let mut peer = Self::start(setup, command, path, &all);
        peer.said("started").await;
        peer
    }

    /// The next line, within [`STEP`].
    pub(crate) async fn next_line(&mut self) -> String {
        timeout(STEP, self.lines.recv())
            .await
            .expect("a line from the Curator peer in time")
            .expect("the Curator peer ended early (see its stderr)")
    }

    /// Waits for the line `expected`.
    pub(crate) async fn said(&mut self, expected: &str) {
        let line = self.next_line().await;
        assert_eq!(line, expected);
    }

    /// Waits for `granted [...] <czxid>`; returns the czxid (the last word).
    pub(crate) async fn granted(&mut self) -> u64 {
        let line = self.next_line().await;
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("granted"), "unexpected line {line:?}");
        words
            .last()
            .and_then(|czxid| czxid.parse().ok())
            .expect("a czxid")
    }

    /// Whether a line has arrived (without waiting).
    pub(crate) fn has_spoken(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Asserts that the peer stays silent for [`SETTLE`].
    pub(crate) async fn stays_silent(&mut self, why: &str) {
        if let Ok(line) = timeout(SETTLE, self.lines.recv()).await {
            panic!("the Curator peer said {line:?} although {why}");
        }
    }

    /// Sends `word` as one line to the peer's standard input, then closes it.
    pub(crate) async fn tell(&mut self, word: &str) {
        let mut stdin = self.stdin.take().expect("stdin still open");
        stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
    }

    /// Tells a holder started with a negative HOLD_MS to release.
    pub(crate) async fn release(&mut self) {
        self.tell("release").await;
    }

    /// Waits for the peer to exit with success.
    pub(crate) async fn exits(mut self) {
        let status = timeout(STEP, self.child.wait())
            .await
            .expect("the Curator peer exits")
            .unwrap();
        assert!(status.success(), "the Curator peer exited with {status}");
    }

    /// Waits for `released`, then for the peer to exit with success.
    pub(crate) async fn released(mut self) {
        self.said("released").await;
        self.exits().await;
    }

    /// The child process (to pause or kill it).
    pub(crate) fn child(&self) -> &Child {
        &self.child
    }
}
