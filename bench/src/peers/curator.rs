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

use std::time::Duration;

use async_trait::async_trait;

use super::process::PeerProcess;
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
    process: PeerProcess,
    /// The JVM's figure for the last cycle.
    last: Option<Duration>,
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
        spawn(url, name, &mode, &warmup, READY_TIMEOUT, QUIT_TIMEOUT)
            .await
            .map(|process| Curator {
                process,
                last: None,
            }),
    )
}

/// Runs the hand-off case with `waiters` waiters in the peer, on the mutex `name` under
/// the URL's root, with `plan`'s settle time, count and time cap. Without the peer
/// built the result says why it was not measured.
pub async fn handoff(url: &str, name: &str, waiters: usize, plan: &Plan) -> HandoffResult {
    let mut samples = Samples::new();
    let outcome = run_handoff(url, name, waiters, plan, &mut samples).await;
    super::handoff_result(HANDOFF_LABEL, waiters, samples, outcome)
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
    // Each participant's session ends when the peer leaves.
    let quit_within =
        QUIT_TIMEOUT.saturating_add(CONNECT_PER_PARTICIPANT.saturating_mul(participants));
    let mut peer = spawn(url, name, &mode, &rest, ready, quit_within).await?;
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
    peer.quit().await?;
    match error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Starts the peer in `mode` on the servers of the distsync URL `url` and the mutex
/// `name` under its root, with the arguments `rest` after the path; waits up to
/// `ready_within` for its `ready`, and gives it `quit_within` to leave once told to.
async fn spawn(
    url: &str,
    name: &str,
    mode: &[String],
    rest: &[String],
    ready_within: Duration,
    quit_within: Duration,
) -> Result<PeerProcess> {
    let launcher = std::env::var_os(PEER_VARIABLE).ok_or_else(|| {
        format!(
            "skipped: {PEER_VARIABLE} is not set (Java and Curator's jars: \
             `scripts/curator-peer.sh build`, then `eval \"$(scripts/servers.sh env)\"`)"
        )
    })?;
    let config: distsync::store::zookeeper::ZkConfig = url.parse()?;
    if config.user().is_some() {
        return Err("the bench connects without a digest login: use a URL without one".into());
    }
    let path = format!("{}/{name}", config.root());
    let mut args = mode.to_vec();
    args.push(config.hosts().join(","));
    args.push(path);
    args.extend_from_slice(rest);
    PeerProcess::spawn(&launcher, &args, ready_within, quit_within).await
}

#[async_trait]
impl Cycler for Curator {
    async fn cycle(&mut self) -> Result<()> {
        self.last = None;
        self.process.say("cycle").await?;
        let line = self.process.line().await?;
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

    async fn close(self: Box<Self>) -> Result<()> {
        self.process.quit().await
    }
}
