//! distsync's ZooKeeper semaphore against Apache Curator's own
//! `InterProcessSemaphoreV2`, run by the Java peer (interop/curator-peer, built by
//! scripts/curator-peer.sh, its launcher in `DISTSYNC_CURATOR_PEER`) on the same server
//! (`DISTSYNC_ZOOKEEPER_URL`): Rust and Java holders share one limit, Java holders keep
//! a Rust waiter out until one returns its lease, and Rust holders keep a Java waiter
//! out until one releases its permit.
//!
//! Skipped loudly when either variable is unset (`scripts/servers.sh up` builds the
//! peer, `scripts/servers.sh env` exports both); a failure under `CI=true`.

use std::num::NonZeroUsize;
use std::process::Stdio;
use std::time::Duration;

use distsync_core::{Coordinator, Semaphore, Session};
use distsync_zookeeper::ZkConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zookeeper_client as zk;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

const MAX: NonZeroUsize = NonZeroUsize::new(2).unwrap();

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
                "\n!!! {var} ({what}) is not set: SKIPPING the Curator semaphore interop \
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

/// A unique semaphore name per test run, so runs never meet.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("curator-interop/{name}-{}-{nanos}", std::process::id())
}

/// The semaphore's node, as Curator is given it.
fn node(setup: &Setup, name: &str) -> String {
    format!("{}/semaphore/{name}", setup.config.root())
}

/// One Curator `InterProcessSemaphoreV2` holder in a child JVM.
struct JavaHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JavaHolder {
    /// Starts `semaphore SERVERS PATH MAX HOLD_MS` and waits for its `started` line.
    async fn start(setup: &Setup, name: &str, hold_ms: i64) -> Self {
        let mut child = Command::new(&setup.peer)
            .args([
                "semaphore",
                &setup.config.hosts().join(","),
                &node(setup, name),
                &MAX.to_string(),
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

    /// Waits for `granted <lease node> <czxid>`; returns the czxid.
    async fn granted(&mut self) -> u64 {
        let line = self.next_line().await;
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("granted"), "unexpected line {line:?}");
        let lease = words.next().expect("a lease node");
        assert!(
            lease.starts_with("_c_") && lease.contains("-lease-"),
            "Curator's lease {lease:?} is not a protected `lease-` node"
        );
        words
            .next()
            .and_then(|czxid| czxid.parse().ok())
            .expect("a czxid")
    }

    /// Whether a line has arrived (without waiting).
    fn has_spoken(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Tells a holder started with a negative HOLD_MS to return its lease.
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
async fn rust_side(setup: &Setup, name: &str) -> (Coordinator, Session, Box<dyn Semaphore>) {
    let coordinator = distsync_zookeeper::connect(&setup.url).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let semaphore = coordinator
        .backend()
        .semaphore(&session, distsync_core::Name::new(name).unwrap(), MAX)
        .unwrap();
    (coordinator, session, semaphore)
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
async fn curator_holders_share_the_limit_and_keep_a_rust_waiter_out() {
    let Some(setup) = setup() else { return };
    let name = unique("semaphore-java-holds");
    let leases = format!("{}/leases", node(&setup, &name));
    let zk = observer(&setup).await;
    let mut java_first = JavaHolder::start(&setup, &name, -1).await;
    let first_token = java_first.granted().await;
    // Shared: a Rust holder takes the second of the two leases.
    let (_coordinator, session, semaphore) = rust_side(&setup, &name).await;
    let rust_permit = timeout(STEP, semaphore.acquire())
        .await
        .expect("the second lease beside Curator's")
        .unwrap();
    assert!(rust_permit.token().get() > first_token);
    // Full: a third, from either side, waits.
    assert!(
        semaphore.try_acquire().await.unwrap().is_none(),
        "Rust's try_acquire while Curator and Rust hold both leases"
    );
    let mut java_third = JavaHolder::start(&setup, &name, -1).await;
    // Curator's waiter holds the mutex and has created its lease: 3 leases of 2.
    until_children(&zk, &leases, 3).await;
    let rust_fourth = {
        let (coordinator, session, semaphore) = rust_side(&setup, &name).await;
        tokio::spawn(async move {
            let permit = semaphore.acquire().await.unwrap();
            (permit, session, coordinator)
        })
    };
    // Queued behind Curator's waiter on the mutex.
    until_children(&zk, &format!("{}/locks", node(&setup, &name)), 2).await;
    assert_eq!(
        java_third.has_spoken(),
        None,
        "Curator granted over the limit"
    );
    assert!(!rust_fourth.is_finished(), "Rust granted over the limit");

    // Curator returns its lease: the waiter at the head of the line (Curator) gets it,
    // the Rust waiter still waits.
    java_first.release().await;
    java_first.released().await;
    let third_token = java_third.granted().await;
    assert!(third_token > rust_permit.token().get());
    until_children(&zk, &leases, 3).await;
    assert!(!rust_fourth.is_finished(), "Rust granted out of turn");

    // Rust releases its permit: the Rust waiter gets it, above Curator's token.
    rust_permit.unlock().await.unwrap();
    let (fourth, fourth_session, _fourth_coordinator) = timeout(STEP, rust_fourth)
        .await
        .expect("the Rust waiter granted after a release")
        .unwrap();
    assert!(fourth.token().get() > third_token);
    java_third.release().await;
    java_third.released().await;
    fourth.unlock().await.unwrap();
    until_children(&zk, &leases, 0).await;
    fourth_session.close().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_holders_keep_a_curator_waiter_out_until_one_releases() {
    let Some(setup) = setup() else { return };
    let name = unique("semaphore-rust-holds");
    let leases = format!("{}/leases", node(&setup, &name));
    let zk = observer(&setup).await;
    let (_first_coordinator, first_session, first) = rust_side(&setup, &name).await;
    let (_second_coordinator, second_session, second) = rust_side(&setup, &name).await;
    let p1 = first.acquire().await.unwrap();
    let p2 = second.acquire().await.unwrap();
    let mut java = JavaHolder::start(&setup, &name, 0).await;
    until_children(&zk, &leases, 3).await;
    assert_eq!(
        java.has_spoken(),
        None,
        "Curator was granted while Rust holds both permits"
    );
    let highest = p1.token().max(p2.token()).get();
    p1.unlock().await.unwrap();
    let java_token = java.granted().await;
    assert!(
        java_token > highest,
        "Curator's czxid {java_token} not above {highest}"
    );
    java.released().await;
    // Curator's lease is gone: a Rust acquirer gets the freed permit at once.
    let again = timeout(STEP, first.try_acquire())
        .await
        .expect("try_acquire answers")
        .unwrap()
        .expect("a permit is free after Curator returned its lease");
    again.unlock().await.unwrap();
    p2.unlock().await.unwrap();
    until_children(&zk, &leases, 0).await;
    first_session.close().await.unwrap();
    second_session.close().await.unwrap();
}
