//! Apache Curator's `InterProcessMutex` (Java), through the interop peer
//! `interop/curator-peer`:
//!
//! - the cycle, in its `bench-cycle` mode: the JVM starts and warms up (the JIT
//!   compiles the acquire+release path) before the run, then times each cycle the
//!   bench asks for with `System.nanoTime` and prints it, so the row holds the JVM's own
//!   figures, measured in the same interleaved rounds as distsync and the raw sequence;
//! - the hand-off, in its `bench-handoff` mode: the protocol of [`crate::handoff`]
//!   (each participant its own Curator client, hence its own ZooKeeper session, a
//!   holder releasing only once the whole line waits and has settled) run by threads
//!   of one JVM, which reads both ends of each hand-off with `System.nanoTime` after
//!   its warm-up and prints the samples at the end.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::args::Plan;
use crate::contender::{started, Cycler, Role, Started};
use crate::handoff::HandoffResult;
use crate::stats::Samples;
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

/// The label of the hand-off rows.
pub const HANDOFF_LABEL: &str =
    "Curator 5.4 InterProcessMutex (a client and a thread per participant, one JVM)";

/// Uncontended cycles the hand-off mode runs before `ready` (capped at 30 s inside
/// it); its first `waiters + 1` hand-offs are not counted either, as distsync's.
const JVM_HANDOFF_WARMUP_CYCLES: u32 = 1000;

/// How long the hand-off mode may take per participant to connect its client, beside
/// [`READY_TIMEOUT`].
const CONNECT_PER_PARTICIPANT: Duration = Duration::from_millis(500);

/// The running peer: one JVM, one Curator client, one mutex.
struct Curator {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
    /// The JVM's figure for the last cycle.
    last: Option<Duration>,
    /// How long it may take to leave once told to.
    quit_within: Duration,
}

/// Starts the peer on the servers of the distsync URL `url`, on the mutex `name`
/// under the URL's root, and waits for its warm-up. Without the peer built (no
/// `DISTSYNC_CURATOR_PEER`, no Java) the row is not measured, with the reason.
pub async fn start(url: &str, name: &str) -> Started {
    let mode = ["bench-cycle".to_owned()];
    let warmup = [JVM_WARMUP_CYCLES.to_string()];
    started(
        LABEL,
        Role::Peer,
        spawn(url, name, &mode, &warmup, READY_TIMEOUT).await,
    )
}

/// Runs the hand-off case with `waiters` waiters in the peer, on the mutex `name` under
/// the URL's root, with `plan`'s settle time, count and time cap. Without the peer
/// built the result says why it was not measured.
pub async fn handoff(url: &str, name: &str, waiters: usize, plan: &Plan) -> HandoffResult {
    let mut result = HandoffResult {
        peer: Some(HANDOFF_LABEL.to_owned()),
        waiters,
        samples: Samples::new(),
        error: None,
    };
    if let Err(error) = run_handoff(url, name, waiters, plan, &mut result.samples).await {
        result.error = Some(error.to_string());
    }
    result
}

async fn run_handoff(
    url: &str,
    name: &str,
    waiters: usize,
    plan: &Plan,
    samples: &mut Samples,
) -> Result<()> {
    let mode = ["bench-handoff".to_owned()];
    let rest = [
        waiters.to_string(),
        plan.settle.as_millis().to_string(),
        plan.handoffs.to_string(),
        plan.case_time.as_millis().to_string(),
        JVM_HANDOFF_WARMUP_CYCLES.to_string(),
    ];
    let participants = u32::try_from(waiters + 1).unwrap_or(u32::MAX);
    let ready = READY_TIMEOUT.saturating_add(CONNECT_PER_PARTICIPANT.saturating_mul(participants));
    let mut peer = spawn(url, name, &mode, &rest, ready).await?;
    // Each participant's session ends when the peer leaves.
    peer.quit_within =
        QUIT_TIMEOUT.saturating_add(CONNECT_PER_PARTICIPANT.saturating_mul(participants));
    peer.say("run").await?;
    // After the stop every waiter still gets the lock once, to leave (as distsync's).
    let drain = plan.case_time + Duration::from_secs(30) + QUIT_TIMEOUT;
    let outcome = tokio::time::timeout(drain, async {
        let mut error = None;
        loop {
            let line = peer.line().await?;
            if line == "done" {
                break;
            }
            if let Some(nanos) = line.strip_prefix("sample ") {
                let nanos: u64 = nanos
                    .trim()
                    .parse()
                    .map_err(|_| format!("expected a hand-off's nanoseconds, got {line:?}"))?;
                samples.push(Duration::from_nanos(nanos));
            } else if let Some(text) = line.strip_prefix("error ") {
                error = Some(text.to_owned());
            } else {
                return Err(format!("unexpected line from the peer: {line:?}").into());
            }
        }
        Ok::<_, crate::BoxError>(error)
    })
    .await;
    let error = match outcome {
        Ok(Ok(error)) => error,
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return Err(peer
                .failed(&format!("no end of the hand-offs within {drain:?}"))
                .await)
        }
    };
    Box::new(peer).close().await?;
    match error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Starts the peer in `mode` on the servers of the distsync URL `url` and the mutex
/// `name` under its root, with the arguments `rest` after the path, and waits up to
/// `ready_within` for its `ready`.
async fn spawn(
    url: &str,
    name: &str,
    mode: &[String],
    rest: &[String],
    ready_within: Duration,
) -> Result<Curator> {
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
        .args(mode)
        .arg(config.hosts().join(","))
        .arg(&path)
        .args(rest)
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
        quit_within: QUIT_TIMEOUT,
    };
    match tokio::time::timeout(ready_within, peer.line()).await {
        Ok(Ok(line)) if line == "ready" => Ok(peer),
        Ok(Ok(line)) => Err(peer
            .failed(&format!("expected `ready`, got {line:?}"))
            .await),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(peer
            .failed(&format!("not ready within {ready_within:?}"))
            .await),
    }
}

impl Curator {
    /// Writes the line `what` to the peer.
    async fn say(&mut self, what: &str) -> Result<()> {
        self.stdin.write_all(format!("{what}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

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
        self.say("cycle").await?;
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
        self.say("quit").await?;
        let quit_within = self.quit_within;
        match tokio::time::timeout(quit_within, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self
                .failed(&format!("the peer failed when leaving ({status})"))
                .await),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(self
                .failed(&format!("the peer did not leave within {quit_within:?}"))
                .await),
        }
    }
}
