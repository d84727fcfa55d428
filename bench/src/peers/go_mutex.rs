//! etcd's own Go `concurrency.Mutex` (etcd 3.4, the implementation distsync's etcd
//! lock shares its key layout with), through the interop peer `interop/etcd-go-peer`
//! (`scripts/go-peer.sh build`, from Debian's `golang-etcd-server-dev`):
//!
//! - the cycle, its `bench-cycle NAME` command: one `Lock` and `Unlock` through the
//!   peer's session, timed in Go, so the row holds Go's own figure and not the pipe
//!   to the bench, measured in the same interleaved rounds as distsync and the raw
//!   sequence (the bench's warm-up cycles warm it up as they do every contender);
//! - the hand-off, its `bench-handoff` command: the protocol of [`crate::handoff`]
//!   (each participant a session of its own on the peer's one client, as distsync's
//!   participants are sessions of one client; a holder releasing only once the whole
//!   line waits and has settled) run by goroutines of the one process, which reads both
//!   ends of each hand-off with Go's monotonic clock.

use std::ffi::OsString;
use std::time::Duration;

use async_trait::async_trait;

use super::process::PeerProcess;
use crate::args::Plan;
use crate::contender::{started, Cycler, Role, Started};
use crate::handoff::HandoffResult;
use crate::stats::Samples;
use crate::Result;

/// The variable naming the peer program (`scripts/servers.sh env` sets it).
pub const PEER_VARIABLE: &str = "DISTSYNC_GO_PEER";

/// The label of the cycle row.
pub const LABEL: &str = "Go concurrency.Mutex, etcd 3.4 (Lock + Unlock, timed in Go)";

/// The label of the hand-off rows.
pub const HANDOFF_LABEL: &str =
    "Go concurrency.Mutex, etcd 3.4 (a session and a goroutine per participant, one process)";

/// How long the peer may take to start and connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the peer may take to leave once told to (it revokes its session).
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the hand-off command may take per participant to open its session and
/// close it, beside the run itself.
const SESSION_PER_PARTICIPANT: Duration = Duration::from_millis(100);

/// The running peer: one Go process, one client, one session, one mutex name.
struct GoMutex {
    process: PeerProcess,
    name: String,
    /// Go's figure for the last cycle.
    last: Option<Duration>,
}

/// Starts the peer on the endpoints (and under the namespace) of the distsync URL
/// `url`, for the mutex `name`. Without the peer built (no `DISTSYNC_GO_PEER`) the
/// row is not measured, with the reason.
///
/// Cancel-safety: dropping the future kills the peer process (its session then expires
/// with its TTL).
pub async fn start(url: &str, name: &str) -> Started {
    let made = spawn(url).await.map(|process| GoMutex {
        process,
        name: name.to_owned(),
        last: None,
    });
    started(LABEL, Role::Peer, made)
}

/// Runs the hand-off case with `waiters` waiters in the peer, on the mutex `name`,
/// with `plan`'s settle time, count and time cap. Without the peer built the result
/// says why it was not measured.
///
/// Cancel-safety: dropping the future kills the peer process; its participants'
/// sessions expire with their TTL.
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
    let mut peer = spawn(url).await?;
    let command = format!(
        "bench-handoff {name} {waiters} {} {} {}",
        plan.settle.as_millis(),
        plan.handoffs,
        plan.case_time.as_millis()
    );
    let participants = u32::try_from(waiters + 1).unwrap_or(u32::MAX);
    // After the stop every waiter still gets the lock once, to leave (as distsync's).
    let drain = (plan.case_time + Duration::from_secs(30))
        .saturating_add(SESSION_PER_PARTICIPANT.saturating_mul(participants));
    let outcome = tokio::time::timeout(drain, ask(&mut peer, &command)).await;
    let tokens = match outcome {
        Ok(tokens) => tokens?,
        Err(_) => {
            return Err(peer
                .failed(&format!("no end of the hand-offs within {drain:?}"))
                .await)
        }
    };
    for token in tokens.split_whitespace() {
        samples.push(Duration::from_nanos(nanos(token)?));
    }
    peer.quit().await
}

/// Starts the peer program on the servers of the distsync URL `url`.
async fn spawn(url: &str) -> Result<PeerProcess> {
    let program: OsString = std::env::var_os(PEER_VARIABLE)
        .filter(|program| !program.is_empty())
        .ok_or_else(|| {
            format!(
                "skipped: {PEER_VARIABLE} is not set (Go and etcd's Go source: \
                 `scripts/go-peer.sh build`, then `eval \"$(scripts/servers.sh env)\"`)"
            )
        })?;
    let config = distsync::store::etcd::EtcdConfig::parse(url)?;
    if config.user().is_some() || config.tls() {
        return Err("the Go peer connects without TLS or a login: use a plain etcd:// URL".into());
    }
    let mut args = vec![
        "--endpoints".to_owned(),
        config.endpoints().join(","),
        "--ttl".to_owned(),
        // The sessions' TTL: the Lock RPC row's lease TTL, `concurrency`'s default.
        super::etcd_lock_rpc::LEASE_TTL_SECS.to_string(),
    ];
    if !config.namespace().is_empty() {
        args.push("--namespace".to_owned());
        args.push(config.namespace().to_owned());
    }
    PeerProcess::spawn(&program, &args, READY_TIMEOUT, QUIT_TIMEOUT).await
}

/// Sends `command` and returns the tokens of its `ok` reply, or its `err` as an error.
async fn ask(peer: &mut PeerProcess, command: &str) -> Result<String> {
    peer.say(command).await?;
    let line = peer.line().await?;
    if line == "ok" {
        return Ok(String::new());
    }
    if let Some(tokens) = line.strip_prefix("ok ") {
        return Ok(tokens.to_owned());
    }
    match line.strip_prefix("err ") {
        Some(error) => Err(format!("the Go peer: {error}").into()),
        None => Err(format!("unexpected line from the Go peer: {line:?}").into()),
    }
}

/// A duration in nanoseconds, as the peer prints it.
fn nanos(token: &str) -> Result<u64> {
    token
        .parse()
        .map_err(|_| format!("expected nanoseconds from the Go peer, got {token:?}").into())
}

#[async_trait]
impl Cycler for GoMutex {
    async fn cycle(&mut self) -> Result<()> {
        self.last = None;
        let command = format!("bench-cycle {}", self.name);
        let reply = ask(&mut self.process, &command).await?;
        self.last = Some(Duration::from_nanos(nanos(reply.trim())?));
        Ok(())
    }

    fn own_time(&self) -> Option<Duration> {
        self.last
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.process.quit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_token_is_nanoseconds_or_an_error() {
        assert_eq!(nanos("1500").unwrap(), 1500);
        assert!(nanos("1.5ms").is_err());
        assert!(nanos("-3").is_err());
    }
}
