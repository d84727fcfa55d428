//! Contended throughput: 2, 8 and 64 clients, each its own session and connection, all
//! cycling lock+unlock on ONE lock for a fixed time; the grants per second of all of
//! them together, how long a grant was waited for, and how evenly the grants were
//! spread over the clients.
//!
//! Rows, one after another, each with its clients made afresh (so no row's clients
//! load the store while another row is measured):
//! - distsync's fair lock and its unfair lock ([`distsync::lock::LockOptions::unfair`];
//!   a backend without it shows the row as unsupported);
//! - the peers that wait for a taken lock ([`crate::peers::contended`]): etcd's Lock
//!   RPC and Go's `concurrency.Mutex` (a process per client), rslock's `acquire` on
//!   Redis (a retry loop with a random sleep, at its default delay and at a short one),
//!   `distributed-lock`, the raw advisory pair and the durable floor (one row update
//!   and a synchronous commit per grant, [`crate::raw::durable_floor`]; not on the
//!   unflushed backend) on PostgreSQL, the same three on MySQL, Curator's
//!   `InterProcessMutex` on ZooKeeper (a JVM per client, so with a few clients only,
//!   [`Plan::contended_jvm_clients`]).
//!
//! Clients are made as in [`crate::aggregate`]: on etcd, Redis and ZooKeeper each
//! distsync client is a backend of its own (`distsync::connect`); on PostgreSQL they
//! are sessions of one backend whose holds' pool has a connection per client; on
//! memory, sessions of the one in-process store.
//!
//! A grant counts when its cycle ends within the measured burst; the wait is the time
//! from asking for the lock to holding it, as the implementation reports it
//! ([`Cycler::last_wait`]), or, for the peers timed in their own process, their whole
//! cycle (lock and unlock), marked as such. For the unfair lock the run also sums
//! [`distsync::Locker::wakeups`] over the clients' handles and divides it by the
//! releases (every cycle, warm-up included): the wake-ups per release, which show
//! whether a release wakes one waiter or all of them.

use std::time::{Duration, Instant};

use distsync::lock::Fairness;
use futures::stream::{self, StreamExt};

use crate::args::Plan;
use crate::contender::{Cycler, Role};
use crate::peers::ContendedPeer;
use crate::stats::{per_second, Samples};
use crate::target::{BackendKind, Target};
use crate::Result;

/// How many clients are made at once (except JVMs, one at a time).
const MADE_AT_ONCE: usize = 8;

/// The unmeasured burst before each measured one, at most.
const WARMUP: Duration = Duration::from_millis(200);

/// How long the clients still waiting at the end of a burst may take to get the lock
/// once and leave, beyond the burst's own length.
const DRAIN: Duration = Duration::from_secs(15);

/// What one implementation gave with one number of clients.
#[derive(Clone, Debug, Default)]
pub struct ContendedResult {
    /// The row label.
    pub label: String,
    /// What it is.
    pub role: Option<Role>,
    /// Clients cycling the one lock.
    pub clients: usize,
    /// Grants within the measured burst.
    pub grants: usize,
    /// The measured burst's length.
    pub elapsed: Duration,
    /// The wait of each grant counted.
    pub waits: Samples,
    /// Whether [`waits`](Self::waits) are whole cycles (the implementation cannot tell
    /// its wait apart).
    pub whole_cycles: bool,
    /// Grants within the burst, per client.
    pub per_client: Vec<usize>,
    /// Every cycle of the run, warm-up and the last turns included: the releases.
    pub releases: usize,
    /// The wake-ups of all clients' handles over the run, for distsync's unfair lock.
    pub wakeups: Option<u64>,
    /// Why the row did not run or stopped early.
    pub error: Option<String>,
    /// Whether the backend does not have the lock (distsync's unfair lock).
    pub unsupported: bool,
}

impl ContendedResult {
    /// Grants per second.
    pub fn rate(&self) -> f64 {
        per_second(self.grants, self.elapsed)
    }

    /// Wake-ups per release, where counted.
    pub fn wakeups_per_release(&self) -> Option<f64> {
        let wakeups = self.wakeups?;
        (self.releases > 0).then(|| wakeups as f64 / self.releases as f64)
    }

    /// The fewest and the most grants one client got.
    pub fn spread(&self) -> Option<(usize, usize)> {
        let least = *self.per_client.iter().min()?;
        Some((least, *self.per_client.iter().max()?))
    }
}

/// An implementation of the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// distsync's lock of this fairness.
    Distsync(Fairness),
    /// A peer.
    Peer(ContendedPeer),
}

impl Implementation {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Distsync(fairness) => crate::cycle::library(fairness).0,
            Implementation::Peer(peer) => peer.label(),
        }
    }

    /// What it is.
    pub fn role(self) -> Role {
        match self {
            Implementation::Distsync(fairness) => crate::cycle::library(fairness).1,
            Implementation::Peer(peer) => peer.role(),
        }
    }

    /// A short name for lock names.
    fn slug(self) -> String {
        match self {
            Implementation::Distsync(Fairness::Unfair) => "unfair".to_owned(),
            Implementation::Distsync(_) => "fair".to_owned(),
            Implementation::Peer(peer) => format!("{peer:?}")
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), ""),
        }
    }
}

/// The implementations run on `target`: distsync's fair and unfair lock, then the peers
/// (with `plan.peers`).
pub fn implementations(target: &Target, plan: &Plan) -> Vec<Implementation> {
    let mut all = vec![
        Implementation::Distsync(Fairness::Fair),
        Implementation::Distsync(Fairness::Unfair),
    ];
    if plan.peers {
        let peers = crate::peers::contended(target);
        all.extend(peers.into_iter().map(Implementation::Peer));
    }
    all
}

/// Runs the case on `target`: every implementation with each of
/// `plan.contended_clients` clients, for `plan.contended_time` each.
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> Vec<ContendedResult> {
    let mut results = Vec::new();
    for implementation in implementations(target, plan) {
        let mut unsupported: Option<ContendedResult> = None;
        for &clients in &plan.contended_clients {
            let label = implementation.label().to_owned();
            let role = Some(implementation.role());
            if let Some(first) = &unsupported {
                results.push(ContendedResult {
                    clients,
                    ..first.clone()
                });
                continue;
            }
            if let Implementation::Peer(peer) = implementation {
                if peer.is_jvm() && clients > plan.contended_jvm_clients {
                    results.push(ContendedResult {
                        label,
                        role,
                        clients,
                        error: Some(format!(
                            "not run: a JVM per client, run with up to {} clients \
                             (--contended-jvm-clients)",
                            plan.contended_jvm_clients
                        )),
                        ..ContendedResult::default()
                    });
                    continue;
                }
            }
            tracing::info!(backend = %target.kind, %label, clients, "contended");
            let name = format!("{run_id}/contended/{}/{clients}", implementation.slug());
            let result = measure(target, &name, implementation, clients, plan).await;
            if result.unsupported {
                unsupported = Some(result.clone());
            }
            results.push(result);
        }
    }
    results
}

/// Measures `implementation` with `clients` clients on the lock `name`, for
/// `plan.contended_time` after a warm-up, the clients made afresh and closed after.
pub async fn measure(
    target: &Target,
    name: &str,
    implementation: Implementation,
    clients: usize,
    plan: &Plan,
) -> ContendedResult {
    let mut result = ContendedResult {
        label: implementation.label().to_owned(),
        role: Some(implementation.role()),
        clients,
        ..ContendedResult::default()
    };
    let made = match implementation {
        Implementation::Distsync(fairness) => {
            library_clients(target, name, clients, fairness).await
        }
        Implementation::Peer(peer) => peer_clients(target, name, clients, peer).await,
    };
    let mut made = match made {
        Ok(made) => made,
        Err(error) => {
            result.unsupported = crate::unsupported(error.as_ref());
            result.error = Some(error.to_string());
            return result;
        }
    };
    let burst = plan.contended_time;
    let warmup = burst.min(WARMUP);
    let mut discard = ContendedResult::default();
    made = run_burst(made, warmup, &mut discard).await;
    if let Some(error) = discard.error {
        result.error = Some(format!("warm-up: {error}"));
    }
    result.releases = discard.releases;
    if !made.is_empty() && result.error.is_none() {
        made = run_burst(made, burst, &mut result).await;
    }
    // The fair lock hands over without waking anyone to ask again (its handles count
    // none), so only the unfair lock's are counted.
    if implementation == Implementation::Distsync(Fairness::Unfair) && !made.is_empty() {
        result.wakeups = made.iter().map(|client| client.wakeups()).sum();
    }
    stream::iter(made)
        .for_each_concurrent(MADE_AT_ONCE, |client| async move {
            if let Err(error) = client.close().await {
                tracing::warn!(%error, "closing a contended client failed");
            }
        })
        .await;
    result
}

/// Runs every client in `clients` for `burst`, adding what it measures to `result`;
/// returns the clients that did not fail (one that fails or cannot leave in time is
/// dropped, its error recorded).
async fn run_burst(
    clients: Vec<Box<dyn Cycler>>,
    burst: Duration,
    result: &mut ContendedResult,
) -> Vec<Box<dyn Cycler>> {
    let count = clients.len();
    let started = Instant::now();
    let deadline = started + burst;
    // A cycle that hangs is an error, not a stuck benchmark.
    let limit = burst.max(Duration::from_secs(10)) + DRAIN;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut turn = Turn::default();
                while Instant::now() < deadline {
                    let asked = Instant::now();
                    match tokio::time::timeout(limit, client.cycle()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(failed)) => {
                            turn.error = Some(failed.to_string());
                            break;
                        }
                        Err(_) => {
                            turn.error = Some(format!("one cycle took over {limit:?}"));
                            break;
                        }
                    }
                    let ended = Instant::now();
                    turn.cycles += 1;
                    if ended <= deadline {
                        turn.grants += 1;
                        let wait = client.last_wait();
                        turn.whole_cycles |= wait.is_none();
                        let cycle = client.own_time().unwrap_or(ended - asked);
                        turn.waits.push(wait.unwrap_or(cycle));
                    }
                }
                (client, turn)
            })
        })
        .collect();
    let mut kept = Vec::with_capacity(count);
    let mut failed = 0;
    let mut per_client = Vec::with_capacity(count);
    for task in tasks {
        let left = (deadline + DRAIN).saturating_duration_since(Instant::now());
        let abort = task.abort_handle();
        let turn = match tokio::time::timeout(left.max(limit), task).await {
            Ok(Ok((client, turn))) => {
                if turn.error.is_none() {
                    kept.push(client);
                }
                turn
            }
            Ok(Err(panicked)) => Turn {
                error: Some(format!("a client's task failed: {panicked}")),
                ..Turn::default()
            },
            Err(_) => {
                abort.abort();
                Turn {
                    error: Some("a client did not get the lock to leave in time".into()),
                    ..Turn::default()
                }
            }
        };
        if let Some(error) = turn.error {
            failed += 1;
            result.error.get_or_insert(error);
        }
        result.grants += turn.grants;
        result.releases += turn.cycles;
        result.waits.extend(&turn.waits);
        result.whole_cycles |= turn.whole_cycles;
        per_client.push(turn.grants);
    }
    result.elapsed += burst;
    result.per_client = per_client;
    if failed > 0 {
        if let Some(error) = &mut result.error {
            *error = format!("{failed} of {count} clients stopped: {error}");
        }
    }
    kept
}

/// What one client did in one burst.
#[derive(Default)]
struct Turn {
    grants: usize,
    cycles: usize,
    waits: Samples,
    whole_cycles: bool,
    error: Option<String>,
}

/// `clients` distsync clients of `fairness` on `name`.
async fn library_clients(
    target: &Target,
    name: &str,
    clients: usize,
    fairness: Fairness,
) -> Result<Vec<Box<dyn Cycler>>> {
    #[cfg(feature = "postgres")]
    if target.kind.is_postgres() {
        let free = crate::raw::postgres::free_connections(&target.url).await?;
        let holds = crate::aggregate::postgres_hold_connections(clients, free);
        let coordinator = crate::aggregate::postgres_backend(&target.url, holds).await?;
        let made = stream::iter(0..clients).map(|_| {
            let coordinator = coordinator.clone();
            async move { crate::cycle::distsync_timed(&coordinator, name, fairness).await }
        });
        return collect(made, MADE_AT_ONCE).await;
    }
    let made = stream::iter(0..clients).map(|_| async move {
        let coordinator = match target.kind {
            BackendKind::Memory => target.coordinator.clone(),
            _ => target.client().await?,
        };
        crate::cycle::distsync_timed(&coordinator, name, fairness).await
    });
    collect(made, MADE_AT_ONCE).await
}

/// `clients` clients of `peer` on `name`.
async fn peer_clients(
    target: &Target,
    name: &str,
    clients: usize,
    peer: ContendedPeer,
) -> Result<Vec<Box<dyn Cycler>>> {
    let at_once = if peer.is_jvm() { 1 } else { MADE_AT_ONCE };
    let url = target.url.as_str();
    let made = stream::iter(0..clients)
        .map(|_| async move { peer.start(url, name).await.map_err(|(_, _, error)| error) });
    collect(made, at_once).await
}

/// The clients `made` yields, `at_once` at a time; on the first error the ones made
/// are closed and the error returned.
async fn collect<S, F>(made: S, at_once: usize) -> Result<Vec<Box<dyn Cycler>>>
where
    S: futures::Stream<Item = F>,
    F: std::future::Future<Output = Result<crate::contender::Contender>>,
{
    let outcomes: Vec<_> = made.buffer_unordered(at_once).collect().await;
    let mut clients = Vec::with_capacity(outcomes.len());
    let mut failure = None;
    for outcome in outcomes {
        match outcome {
            Ok(contender) => clients.push(contender.cycler),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    match failure {
        None => Ok(clients),
        Some(error) => {
            for client in clients {
                if let Err(closing) = client.close().await {
                    tracing::debug!(%closing, "closing a contended client failed");
                }
            }
            Err(error)
        }
    }
}
