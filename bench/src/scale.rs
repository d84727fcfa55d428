//! At scale, on every backend: from one process (one backend
//! connection set), N sessions each holding a lock of its own, grown in steps (by
//! default 100, 1,000 and 10,000 holds), then 1,000 more sessions waiting, one on each
//! of 1,000 of those locks; then the contended hand-off at 1, 10, 100 and 1,000
//! waiters on one lock while the holds stay held.
//!
//! At each step (the holds of the earlier steps still held) it records the time spent
//! opening sessions and acquiring locks so far, the client's resident memory
//! (`VmRSS`), the store connections from this process and the keepalive requests the
//! store served during one renewal interval (`ttl / 3`) with nothing else running, so
//! that every session renews once in the window. The sessions use the plan's scale TTL
//! (`--scale-ttl-secs`: a session's default 15 s, or 3 s with `--quick` so that a window
//! fits a short run; the requests per session per renewal interval do not depend on it).
//! How each store is read is in `scale/meter.rs`; the process figures come from
//! `scale/procfs.rs`.
//!
//! With everything held and waiting it records the connections and memory again; it
//! then releases the contended locks and times until every waiter holds, and measures
//! the hand-offs as [`crate::handoff`] does, sampling the connections meanwhile.
//!
//! The coordinator is a fresh one (`distsync::connect`), so the figures are its own;
//! other cases of the same run may still hold connections of their own when this one
//! starts, which the "before" column shows.

pub mod isolated;
mod meter;
pub mod procfs;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::{Coordinator, LockGuard, Session};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::args::Plan;
use crate::handoff::{self, close, HandoffResult};
use crate::target::Target;
use crate::Result;
use meter::Meter;
pub use procfs::rss_kb;

/// Sessions opened, and locks acquired, at once while the holds are taken.
const IN_FLIGHT: usize = 64;

/// Releases and session closes in flight at once when the case ends (not measured:
/// as many as the store takes well, to keep the run short).
const TEARDOWN_IN_FLIGHT: usize = 256;

/// Time added to the hand-off cap per waiter in line (its unmeasured first turn).
const HANDOFF_TIME_PER_WAITER: Duration = Duration::from_millis(40);

/// Requests a store served in a window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    /// Requests counted.
    pub count: u64,
    /// The window's length.
    pub window: Duration,
}

impl Requests {
    /// Requests per second.
    pub fn per_sec(&self) -> f64 {
        self.count as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// The figures after one step of growing the holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizePoint {
    /// Locks held (one per session), this step's and the earlier ones'.
    pub holds: usize,
    /// Time spent opening the `holds` sessions, over all steps so far.
    pub open_sessions: Duration,
    /// Time spent acquiring the `holds` locks, over all steps so far.
    pub acquire_all: Duration,
    /// Client resident memory with the `holds` held, in kB.
    pub rss_kb: Option<u64>,
    /// Store connections with the `holds` held.
    pub connections: Option<i64>,
    /// Keepalive requests the store served in one renewal interval, nothing else
    /// running.
    pub keepalive: Option<Requests>,
}

impl SizePoint {
    /// Acquiring time per hold.
    pub fn acquire_per_hold(&self) -> Duration {
        self.acquire_all / self.holds.max(1) as u32
    }

    /// Session opening time per session.
    pub fn open_per_session(&self) -> Duration {
        self.open_sessions / self.holds.max(1) as u32
    }

    /// Client memory per hold above `base` (kB), the memory with the coordinator
    /// connected and nothing held.
    pub fn rss_per_hold_kb(&self, base: Option<u64>) -> Option<f64> {
        let grown = self.rss_kb?.saturating_sub(base?);
        Some(grown as f64 / self.holds.max(1) as f64)
    }

    /// Keepalive requests per session and renewal interval (`interval`).
    pub fn keepalive_per_session(&self, interval: Duration) -> Option<f64> {
        let requests = self.keepalive?;
        let intervals = requests.window.as_secs_f64() / interval.as_secs_f64().max(1e-9);
        Some(requests.count as f64 / self.holds.max(1) as f64 / intervals.max(1e-9))
    }
}

/// What the case measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScaleResult {
    /// Locks held at once at the largest step (one per session).
    pub holds: usize,
    /// Sessions waiting, each on one of the held locks.
    pub waiting: usize,
    /// The sessions' TTL (they renew every third of it).
    pub ttl: Duration,
    /// The server's connection limit, where it has one (PostgreSQL's
    /// `max_connections`).
    pub max_connections: Option<i64>,
    /// Store connections before the case's coordinator connected.
    pub connections_before: Option<i64>,
    /// Store connections with every hold held and every waiter waiting.
    pub connections_peak: Option<i64>,
    /// The most store connections seen during the hand-offs.
    pub connections_handoff: Option<i64>,
    /// Client resident memory before the coordinator connected, in kB.
    pub rss_before_kb: Option<u64>,
    /// Client resident memory with the coordinator connected and nothing held, in
    /// kB: the base of the memory per hold.
    pub rss_connected_kb: Option<u64>,
    /// Client resident memory with everything held and waiting, in kB.
    pub rss_peak_kb: Option<u64>,
    /// Time spent opening the `holds` sessions (all steps).
    pub open_sessions: Option<Duration>,
    /// Time spent acquiring the `holds` locks (all steps; sessions already open).
    pub acquire_all: Option<Duration>,
    /// Time from releasing the `waiting` contended locks to every waiter holding.
    pub release_to_waiters: Option<Duration>,
    /// The figures after each step of holds.
    pub sizes: Vec<SizePoint>,
    /// Hand-off per waiter count, with the holds held.
    pub handoff: Vec<HandoffResult>,
    /// Why the case stopped early or did not run.
    pub error: Option<String>,
}

impl ScaleResult {
    /// The renewal interval of the case's sessions.
    pub fn renewal_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// The figures at the largest step measured.
    pub fn largest(&self) -> Option<&SizePoint> {
        self.sizes.last()
    }
}

/// Runs the case on `target` (any backend).
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> ScaleResult {
    let holds = plan.scale_sizes.last().copied().unwrap_or(0);
    let mut result = ScaleResult {
        holds,
        waiting: plan.scale_waiting.min(holds),
        ttl: plan.scale_ttl,
        ..ScaleResult::default()
    };
    if let Err(error) = measure(target, run_id, plan, &mut result).await {
        result.error = Some(error.to_string());
    }
    result
}

/// The name of lock `index`: the first `contended` are the ones waiters will queue
/// on, under a prefix of their own so that their lines can be read apart.
fn lock_name(prefix: &str, index: usize, contended: usize) -> String {
    if index < contended {
        format!("{prefix}w/{index}")
    } else {
        format!("{prefix}h/{index}")
    }
}

/// The holds, one per session: the contended locks first, each under the prefix
/// waiters queue on.
struct Holds {
    coordinator: Coordinator,
    prefix: String,
    contended: usize,
    sessions: Vec<Session>,
    guards: Vec<LockGuard>,
}

async fn measure(
    target: &Target,
    run_id: &str,
    plan: &Plan,
    result: &mut ScaleResult,
) -> Result<()> {
    let mut meter = Meter::connect(target).await?;
    result.max_connections = meter.max_connections().await?;
    result.connections_before = meter.connections().await?;
    result.rss_before_kb = rss_kb();
    let coordinator = distsync::connect(&target.url).await?;
    result.rss_connected_kb = rss_kb();
    let mut holds = Holds {
        coordinator,
        prefix: format!("{run_id}/scale/"),
        contended: result.waiting,
        sessions: Vec::new(),
        guards: Vec::new(),
    };
    grow(target, plan, &mut holds, &mut meter, result).await?;
    wait_and_release(plan, &mut holds, &mut meter, result).await?;
    handoffs(target, plan, &holds, meter, result).await;
    let started = Instant::now();
    unlock(holds.guards, TEARDOWN_IN_FLIGHT).await?;
    close(holds.sessions, TEARDOWN_IN_FLIGHT).await;
    tracing::info!(backend = %target.kind, elapsed = ?started.elapsed(), "scale: released and closed");
    Ok(())
}

/// Grows the holds in the plan's steps, recording each step's figures.
async fn grow(
    target: &Target,
    plan: &Plan,
    holds: &mut Holds,
    meter: &mut Meter,
    result: &mut ScaleResult,
) -> Result<()> {
    let Holds {
        coordinator,
        prefix,
        contended,
        sessions,
        guards,
    } = holds;
    let (prefix, contended) = (prefix.as_str(), *contended);
    let ttl = plan.scale_ttl;
    let (mut opening, mut acquiring) = (Duration::ZERO, Duration::ZERO);
    for &size in &plan.scale_sizes {
        let base = sessions.len();
        let more = size.saturating_sub(base);
        let started = Instant::now();
        let opened = open(coordinator, more, ttl).await?;
        opening += started.elapsed();
        let started = Instant::now();
        let mut taken: Vec<LockGuard> = stream::iter(opened.iter().enumerate())
            .map(|(i, session)| {
                let coordinator = coordinator.clone();
                let name = lock_name(prefix, base + i, contended);
                async move { coordinator.locker(session, &name)?.lock().await }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        acquiring += started.elapsed();
        sessions.extend(opened);
        guards.append(&mut taken);
        let keepalive = window(meter, result.renewal_interval()).await?;
        let point = SizePoint {
            holds: guards.len(),
            open_sessions: opening,
            acquire_all: acquiring,
            rss_kb: rss_kb(),
            connections: meter.connections().await?,
            keepalive,
        };
        tracing::info!(
            backend = %target.kind,
            holds = point.holds,
            open = ?point.open_sessions,
            acquire = ?point.acquire_all,
            rss_kb = ?point.rss_kb,
            connections = ?point.connections,
            keepalive_per_sec = ?point.keepalive.map(|k| k.per_sec()),
            "scale: all held"
        );
        result.sizes.push(point);
    }
    result.open_sessions = Some(opening);
    result.acquire_all = Some(acquiring);

    Ok(())
}

/// Queues the waiters, one on each contended lock, then releases those locks and
/// times until every waiter holds.
async fn wait_and_release(
    plan: &Plan,
    holds: &mut Holds,
    meter: &mut Meter,
    result: &mut ScaleResult,
) -> Result<()> {
    let (coordinator, prefix) = (&holds.coordinator, holds.prefix.as_str());
    let (contended, ttl) = (holds.contended, plan.scale_ttl);
    // The waiters: one on each of the first `contended` held locks.
    let waiting = contended.min(holds.guards.len());
    let waiter_sessions = open(coordinator, waiting, ttl).await?;
    let mut waits = Vec::with_capacity(waiting);
    for (i, session) in waiter_sessions.iter().enumerate() {
        let locker = coordinator.locker(session, &lock_name(prefix, i, contended))?;
        waits.push(tokio::spawn(async move { locker.lock().await }));
    }
    all_queued(coordinator, &format!("{prefix}w/"), &mut waits, plan).await?;
    result.connections_peak = meter.connections().await?;
    result.rss_peak_kb = rss_kb();
    tracing::info!(
        connections = ?result.connections_peak,
        rss_kb = ?result.rss_peak_kb,
        "scale: everything held and waiting"
    );

    // Release the contended locks; every waiter is granted, then lets go.
    let started = Instant::now();
    let contended_guards: Vec<LockGuard> = holds.guards.drain(..waiting).collect();
    unlock(contended_guards, IN_FLIGHT).await?;
    for wait in waits {
        wait.await??.unlock().await?;
    }
    result.release_to_waiters = Some(started.elapsed());
    close(waiter_sessions, IN_FLIGHT).await;
    Ok(())
}

/// The hand-offs with the other holds held, sampling the store connections meanwhile.
async fn handoffs(
    target: &Target,
    plan: &Plan,
    holds: &Holds,
    mut meter: Meter,
    result: &mut ScaleResult,
) {
    let (coordinator, prefix) = (&holds.coordinator, holds.prefix.as_str());
    // Hand-offs with the other holds held, sampled for connections meanwhile.
    let most = Arc::new(AtomicI64::new(-1));
    let sampler = {
        let most = Arc::clone(&most);
        tokio::spawn(async move {
            loop {
                match meter.connections().await {
                    Ok(Some(now)) => {
                        most.fetch_max(now, Ordering::Relaxed);
                    }
                    Ok(None) => return,
                    Err(error) => tracing::debug!(%error, "scale: sampling connections"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let on_this_backend = Target {
        kind: target.kind,
        url: target.url.clone(),
        coordinator: coordinator.clone(),
    };
    for &waiters in &plan.scale_handoff_waiters {
        tracing::info!(backend = %target.kind, waiters, "scale: hand-off with the holds held");
        let started = Instant::now();
        // Every participant's first grant is not measured: with 1,000 waiters that
        // is a thousand hand-offs before the first sample, so the cap grows with
        // the line.
        let capped = Plan {
            case_time: plan.case_time + HANDOFF_TIME_PER_WAITER * waiters as u32,
            ..plan.clone()
        };
        let mut measured = handoff::run(
            &on_this_backend,
            &format!("{prefix}handoff"),
            waiters,
            &capped,
        )
        .await;
        if measured.samples.is_empty() && measured.error.is_none() {
            measured.error = Some(format!(
                "no hand-off measured within {:?}",
                capped.case_time
            ));
        }
        tracing::info!(
            backend = %target.kind,
            waiters,
            elapsed = ?started.elapsed(),
            p50 = ?measured.samples.summary().map(|summary| summary.p50),
            "scale: hand-off measured"
        );
        result.handoff.push(measured);
    }
    sampler.abort();
    let most = most.load(Ordering::Relaxed);
    result.connections_handoff = (most >= 0).then_some(most);
}

/// Opens `count` sessions of `ttl`, `IN_FLIGHT` at a time.
async fn open(coordinator: &Coordinator, count: usize, ttl: Duration) -> Result<Vec<Session>> {
    Ok(stream::iter(0..count)
        .map(|_| coordinator.session_with(distsync::SessionOptions::with_ttl(ttl)))
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?)
}

/// The keepalive requests the store serves during `interval`, or `None` where the
/// meter has no counter (nothing is waited for then).
async fn window(meter: &mut Meter, interval: Duration) -> Result<Option<Requests>> {
    let Some(first) = meter.keepalives().await? else {
        return Ok(None);
    };
    let started = Instant::now();
    tokio::time::sleep(interval).await;
    let Some(last) = meter.keepalives().await? else {
        return Ok(None);
    };
    Ok(Some(Requests {
        count: last.saturating_sub(first),
        window: started.elapsed(),
    }))
}

/// Waits (a bounded poll of the store's status) until `waiting` waiters are queued on
/// the lines under `prefix`. Every waiter waits on a lock that stays held meanwhile, so
/// one whose `lock()` ended (failed, or was granted) stops the wait with what it
/// ended with, rather than leaving a shortfall at the deadline unexplained.
async fn all_queued(
    coordinator: &Coordinator,
    prefix: &str,
    waits: &mut Vec<tokio::task::JoinHandle<distsync::Result<LockGuard>>>,
    plan: &Plan,
) -> Result<()> {
    let waiting = waits.len();
    let deadline = Instant::now() + plan.case_time + Duration::from_secs(60);
    loop {
        let status = coordinator.status(prefix).await?;
        let queued: usize = status.lines.iter().map(|line| line.waiters.len()).sum();
        if queued >= waiting {
            return Ok(());
        }
        if let Some(index) = waits.iter().position(tokio::task::JoinHandle::is_finished) {
            let how = match waits.swap_remove(index).await {
                Ok(Ok(_granted)) => {
                    "was granted while the lock was held (its holder's session ended?)".to_owned()
                }
                Ok(Err(error)) => format!("failed: {error}"),
                Err(error) => format!("did not finish: {error}"),
            };
            return Err(format!(
                "a waiter's lock() ended with {queued} of {waiting} waiters queued: it {how}"
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!("only {queued} of {waiting} waiters queued in time").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Releases `guards`, `in_flight` at a time.
async fn unlock(guards: Vec<LockGuard>, in_flight: usize) -> Result<()> {
    stream::iter(guards)
        .map(|guard| guard.unlock())
        .buffer_unordered(in_flight)
        .try_collect::<()>()
        .await?;
    Ok(())
}
