//! Apache Curator's `InterProcessMutex` (Java), through the interop peer
//! `interop/curator-peer` in its `bench-cycle` mode: the JVM starts and warms up (the
//! JIT compiles the acquire+release path) before the run, then times each cycle the
//! bench asks for with `System.nanoTime` and prints it, so the row holds the JVM's own
//! figures, measured in the same interleaved rounds as distsync and the raw sequence.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The variable naming the peer's launcher (`scripts/servers.sh env` sets it).
pub const PEER_VARIABLE: &str = "DISTSYNC_CURATOR_PEER";

/// Cycles the JVM runs before `ready` (capped at 30 s inside it): enough for the JIT
/// to compile Curator's and the ZooKeeper client's paths.
const JVM_WARMUP_CYCLES: u32 = 2000;

/// How long the JVM may take to start, connect and warm up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the peer may take to leave once told to.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The label of this row.
pub const LABEL: &str =
    "Curator 5.4 InterProcessMutex (acquire + release, timed in the warmed-up JVM)";

/// The running peer: one JVM, one Curator client, one mutex.
struct Curator {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
    /// The JVM's figure for the last cycle.
    last: Option<Duration>,
}

/// Starts the peer on the servers of the distsync URL `url`, on the mutex `name`
/// under the URL's root, and waits for its warm-up. Without the peer built (no
/// `DISTSYNC_CURATOR_PEER`, no Java) the row is not measured, with the reason.
pub async fn start(url: &str, name: &str) -> Started {
    started(LABEL, Role::Peer, spawn(url, name).await)
}

async fn spawn(url: &str, name: &str) -> Result<Curator> {
    let launcher = std::env::var_os(PEER_VARIABLE).ok_or_else(|| {
        format!(
            "skipped: {PEER_VARIABLE} is not set (Java and Curator's jars: \
             `scripts/curator-peer.sh build`, then `eval \"$(scripts/servers.sh env)\"`)"
        )
    })?;
    let config: distsync::zookeeper::ZkConfig = url.parse()?;
    if config.user().is_some() {
        return Err("the bench connects without a digest login: use a URL without one".into());
    }
    let path = format!("{}/{name}", config.root());
    let mut child = Command::new(&launcher)
        .arg("bench-cycle")
        .arg(config.hosts().join(","))
        .arg(&path)
        .arg(JVM_WARMUP_CYCLES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            format!(
                "skipped: could not run {}: {error}",
                launcher.to_string_lossy()
            )
        })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the peer's standard streams were not piped".into());
    };
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        // What it printed before a read error is kept.
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut peer = Curator {
        child,
        stdin,
        stdout: BufReader::new(stdout).lines(),
        stderr: Some(stderr),
        last: None,
    };
    match tokio::time::timeout(READY_TIMEOUT, peer.line()).await {
        Ok(Ok(line)) if line == "ready" => Ok(peer),
        Ok(Ok(line)) => Err(peer
            .failed(&format!("expected `ready`, got {line:?}"))
            .await),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(peer
            .failed(&format!("not ready within {READY_TIMEOUT:?}"))
            .await),
    }
}

impl Curator {
    /// The peer's next line, or its failure (with what it printed on standard error)
    /// once it ended.
    async fn line(&mut self) -> Result<String> {
        match self.stdout.next_line().await? {
            Some(line) => Ok(line),
            None => Err(self.failed("the peer ended").await),
        }
    }

    /// `what`, with the peer's standard error: stops the peer first, so that its
    /// standard error ends.
    async fn failed(&mut self, what: &str) -> crate::BoxError {
        if let Err(error) = self.child.start_kill() {
            tracing::debug!(%error, "the Curator peer could not be killed; it has ended");
        }
        let said = match self.stderr.take() {
            Some(task) => tokio::time::timeout(QUIT_TIMEOUT, task)
                .await
                .ok()
                .and_then(std::result::Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        let said = said.trim();
        if said.is_empty() {
            what.into()
        } else {
            format!("{what}: {said}").into()
        }
    }
}

#[async_trait]
impl Cycler for Curator {
    async fn cycle(&mut self) -> Result<()> {
        self.last = None;
        self.stdin.write_all(b"cycle\n").await?;
        self.stdin.flush().await?;
        let line = self.line().await?;
        let nanos: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("expected a cycle's nanoseconds, got {line:?}"))?;
        self.last = Some(Duration::from_nanos(nanos));
        Ok(())
    }

    fn own_time(&self) -> Option<Duration> {
        self.last
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.stdin.write_all(b"quit\n").await?;
        self.stdin.flush().await?;
        match tokio::time::timeout(QUIT_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self
                .failed(&format!("the peer failed when leaving ({status})"))
                .await),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(self
                .failed(&format!("the peer did not leave within {QUIT_TIMEOUT:?}"))
                .await),
        }
    }
}
