//! The 64-client aggregate: many clients, each its own connection (its
//! own backend) and its own lock name, each cycling lock+unlock back to back for a
//! fixed time; the cycles per second of all of them together, for distsync's fair
//! lock, for its unfair lock ([`distsync::lock::LockOptions::unfair`]) and for as many
//! clients running the raw sequence of [`crate::raw`] on the same store.
//!
//! The sides run in interleaved bursts, one burst each per round, each round starting
//! with the other side, so that a burst of load on the machine hits both alike; the
//! report gives the ratio distsync ÷ raw of the aggregate rates and the spread of the
//! per-round ratios, for each of distsync's locks. The throughput target is judged on
//! the fair lock, whose guarantees are the ones the target keeps; the unfair lock's
//! ratios stand beside it as figures.
//!
//! Client and server share the machine's CPUs; at 64 clients every side keeps them
//! busy, so the ratio weighs the CPU time a cycle costs (the server's and the
//! client's together) more than its round trips, which dominate the single-client
//! cycle ratio.
//!
//! Per store:
//! - etcd and Redis: every client is a backend of its own (`distsync::connect`), and
//!   every raw client a client of its own (one gRPC channel, one `ConnectionManager`);
//! - PostgreSQL: every raw client is a connection of its own; distsync's clients are
//!   sessions of one backend (as one service process would run them) whose holds'
//!   pool (`hold_connections`) has as many connections as there are clients, so that
//!   both sides have a connection per client, when the server's free connections
//!   allow (fewer otherwise, see [`postgres_hold_connections`]); the backend also
//!   opens the pool of [`POSTGRES_POOL`] given to `backend_from_pool` and its reaper's
//!   2 ([`POSTGRES_OTHER_CONNECTIONS`] in all). The fair and the unfair lock's
//!   sessions share that backend: the sides run one at a time, so each has the whole
//!   pool while it runs;
//! - memory: one shared in-process store, no raw sequence (cycles per second only).
//!
//! On PostgreSQL a third side runs as many `distributed-lock` clients (each a pool of
//! its own, session advisory locks, [`crate::peers::distributed_lock`]) in the same
//! rounds, when the build has that peer and the plan runs peers: the peer the issue of
//! PostgreSQL throughput holds distsync against. Each of its clients has a pool of one
//! connection, like every other side's client (see
//! [`crate::peers::distributed_lock::postgres`]).

use std::time::{Duration, Instant};

use distsync::lock::Fairness;
use distsync::Coordinator;

use crate::args::Plan;
use crate::contender::Cycler;
use crate::cycle::distsync_with;
use crate::stats::per_second;
use crate::target::{BackendKind, Target};
use crate::Result;

/// Connections distsync's PostgreSQL backend opens besides its holds' pool: the pool
/// it is given ([`POSTGRES_POOL`]) and its reaper's (2).
pub const POSTGRES_OTHER_CONNECTIONS: usize = 4;

/// The pool given to the PostgreSQL backend of this case (`backend_from_pool`): the
/// notification listener takes one connection, name lookups the other.
pub const POSTGRES_POOL: u32 = 2;

/// Free connections left for other work (the bench's own checks) when sizing the
/// PostgreSQL sides.
const POSTGRES_SPARE: usize = 4;

/// The cycles of one side (distsync or raw) over all its rounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Throughput {
    /// The row label.
    pub label: String,
    /// Clients that ran.
    pub clients: usize,
    /// Cycles completed by all clients together, in the measured bursts.
    pub cycles: usize,
    /// Wall time of the measured bursts, from the start of each to its last client's
    /// last cycle.
    pub elapsed: Duration,
    /// Cycles per second of each measured round.
    pub round_rates: Vec<f64>,
    /// The first error a client met (that client stopped there), with how many did.
    pub error: Option<String>,
}

impl Throughput {
    /// Aggregate cycles per second.
    pub fn rate(&self) -> f64 {
        per_second(self.cycles, self.elapsed)
    }

    /// This side's aggregate rate ÷ `other`'s, when both cycled.
    pub fn ratio_to(&self, other: &Throughput) -> Option<f64> {
        let (rate, theirs) = (self.rate(), other.rate());
        (theirs > 0.0 && rate > 0.0).then(|| rate / theirs)
    }
}

/// What the case measured on one backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregateResult {
    /// Concurrent clients per side.
    pub clients: usize,
    /// Measured rounds (each side runs one burst per round).
    pub rounds: usize,
    /// Duration of one burst.
    pub burst: Duration,
    /// How distsync's clients are set up (backends, connections).
    pub setup: String,
    /// distsync's clients, on its fair lock.
    pub library: Option<Throughput>,
    /// distsync's clients on its unfair lock (none where the backend has no unfair
    /// lock: [`error`](Self::error) says so).
    pub unfair: Option<Throughput>,
    /// The raw clients (none on memory).
    pub raw: Option<Throughput>,
    /// The peer's clients (`distributed-lock` on PostgreSQL), where it runs.
    pub peer: Option<Throughput>,
    /// Why the case did not run, or which of its sides could not start (each reason,
    /// `; ` between them).
    pub error: Option<String>,
}

impl AggregateResult {
    /// distsync's clients on its lock of `fairness`.
    pub fn side(&self, fairness: Fairness) -> Option<&Throughput> {
        match fairness {
            Fairness::Unfair => self.unfair.as_ref(),
            _ => self.library.as_ref(),
        }
    }

    /// The aggregate rate of distsync's fair lock ÷ the raw clients'.
    pub fn ratio(&self) -> Option<f64> {
        self.library.as_ref()?.ratio_to(self.raw.as_ref()?)
    }

    /// Adds `reason` to [`error`](Self::error).
    fn note(&mut self, reason: String) {
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        });
    }
}

/// One side's clients, and its running totals.
struct Side {
    clients: Vec<Box<dyn Cycler>>,
    totals: Throughput,
    failed: usize,
}

impl Side {
    fn new(clients: Vec<Box<dyn Cycler>>, label: String) -> Self {
        Self {
            totals: Throughput {
                label,
                clients: clients.len(),
                ..Throughput::default()
            },
            clients,
            failed: 0,
        }
    }

    /// Runs every client for `burst`; adds the cycles and time when `measured`.
    async fn burst(&mut self, burst: Duration, measured: bool) {
        if self.clients.is_empty() {
            // Every client has stopped: a round of nothing, so rounds stay aligned.
            if measured {
                self.totals.round_rates.push(0.0);
            }
            return;
        }
        let started = Instant::now();
        let deadline = started + burst;
        // A cycle that hangs is an error, not a stuck benchmark.
        let limit = burst.max(Duration::from_secs(10));
        let tasks: Vec<_> = std::mem::take(&mut self.clients)
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    let mut cycles = 0;
                    let mut error = None;
                    while Instant::now() < deadline {
                        match tokio::time::timeout(limit, client.cycle()).await {
                            Ok(Ok(())) => cycles += 1,
                            Ok(Err(failed)) => {
                                error = Some(failed.to_string());
                                break;
                            }
                            Err(_) => {
                                error = Some(format!("one cycle took over {limit:?}"));
                                break;
                            }
                        }
                    }
                    (client, cycles, error)
                })
            })
            .collect();
        let mut cycles = 0;
        for task in tasks {
            match task.await {
                Ok((client, done, error)) => {
                    cycles += done;
                    match error {
                        None => self.clients.push(client),
                        Some(error) => {
                            self.failed += 1;
                            self.totals.error.get_or_insert(error);
                            close(client).await;
                        }
                    }
                }
                Err(panicked) => {
                    self.failed += 1;
                    self.totals
                        .error
                        .get_or_insert(format!("a client's task failed: {panicked}"));
                }
            }
        }
        let elapsed = started.elapsed();
        if measured {
            self.totals.cycles += cycles;
            self.totals.elapsed += elapsed;
            self.totals.round_rates.push(per_second(cycles, elapsed));
        }
    }

    async fn finish(mut self) -> Throughput {
        for client in std::mem::take(&mut self.clients) {
            close(client).await;
        }
        if self.failed > 0 {
            if let Some(error) = &mut self.totals.error {
                *error = format!(
                    "{} of {} clients stopped: {error}",
                    self.failed, self.totals.clients
                );
            }
        }
        self.totals
    }
}

async fn close(client: Box<dyn Cycler>) {
    if let Err(error) = client.close().await {
        tracing::warn!(%error, "closing an aggregate client failed");
    }
}

/// Runs the case on `target` with `plan.aggregate_clients` clients a side, for
/// `plan.aggregate_time` per side split in `plan.aggregate_rounds` rounds.
pub async fn run(target: &Target, run_id: &str, plan: &Plan) -> AggregateResult {
    let clients = plan.aggregate_clients.max(1);
    let rounds = plan.aggregate_rounds.max(1);
    let burst = plan.aggregate_time / u32::try_from(rounds).unwrap_or(u32::MAX);
    let mut result = AggregateResult {
        clients,
        rounds,
        burst,
        ..AggregateResult::default()
    };
    let prefix = format!("{run_id}/aggregate");
    let raw = match raw_clients(target, &prefix, clients).await {
        Ok(raw) => raw,
        Err(error) => {
            result.note(format!("raw clients: {error}"));
            None
        }
    };
    let peer = if plan.peers {
        match peer_clients(target, &prefix, clients).await {
            Ok(peer) => peer,
            Err(error) => {
                result.note(format!("peer clients: {error}"));
                None
            }
        }
    } else {
        None
    };
    let made = match backends(target, clients).await {
        Ok((backends, setup)) => {
            result.setup = setup;
            let fair = library_clients(target, &backends, &prefix, clients, Fairness::Fair);
            fair.await.map(|fair| (backends, fair))
        }
        Err(error) => Err(error),
    };
    let (backends, library) = match made {
        Ok(made) => made,
        Err(error) => {
            result.note(format!("distsync clients: {error}"));
            for (clients, label) in raw.into_iter().chain(peer) {
                Side::new(clients, label).finish().await;
            }
            return result;
        }
    };
    let unfair = library_clients(target, &backends, &prefix, clients, Fairness::Unfair).await;
    let unfair = match unfair {
        Ok(unfair) => Some(unfair),
        Err(error) => {
            result.note(format!("distsync's unfair clients: {error}"));
            None
        }
    };
    let label = |fairness| crate::cycle::library(fairness).0.to_owned();
    let mut sides = vec![Side::new(library, label(Fairness::Fair))];
    let has_unfair = unfair.is_some();
    sides.extend(unfair.map(|clients| Side::new(clients, label(Fairness::Unfair))));
    let has_raw = raw.is_some();
    sides.extend(raw.map(|(clients, label)| Side::new(clients, label)));
    sides.extend(peer.map(|(clients, label)| Side::new(clients, label)));
    // Warm-up: one unmeasured burst each.
    let warmup = burst.min(Duration::from_millis(200));
    for side in &mut sides {
        side.burst(warmup, false).await;
    }
    // Each round starts with the next side, so that none always follows another.
    let count = sides.len();
    for round in 0..rounds {
        for offset in 0..count {
            sides[(round + count - 1 + offset) % count]
                .burst(burst, true)
                .await;
        }
    }
    let mut finished = Vec::with_capacity(count);
    for side in sides {
        finished.push(side.finish().await);
    }
    let mut finished = finished.into_iter();
    result.library = finished.next();
    if has_unfair {
        result.unfair = finished.next();
    }
    if has_raw {
        result.raw = finished.next();
    }
    result.peer = finished.next();
    result
}

/// `clients` clients of the peer of `target`'s store for this case
/// (`distributed-lock` on PostgreSQL and on MySQL) and their label, or `None` where it
/// has none.
#[allow(unused_variables)]
async fn peer_clients(
    target: &Target,
    prefix: &str,
    clients: usize,
) -> Result<Option<(Vec<Box<dyn Cycler>>, String)>> {
    #[cfg(feature = "distributed-lock")]
    let peer = match target.kind {
        kind if kind.is_postgres() => Some(crate::peers::ContendedPeer::DistributedLockPostgres),
        BackendKind::Mysql => Some(crate::peers::ContendedPeer::DistributedLockMysql),
        _ => None,
    };
    #[cfg(feature = "distributed-lock")]
    if let Some(peer) = peer {
        let mut made: Vec<Box<dyn Cycler>> = Vec::with_capacity(clients);
        let label = peer.label().to_owned();
        for index in 0..clients {
            let name = format!("{prefix}/peer/{index}");
            match peer.start(&target.url, &name).await {
                Ok(client) => made.push(client.cycler),
                Err((_, _, error)) => {
                    for client in made {
                        close(client).await;
                    }
                    return Err(error);
                }
            }
        }
        return Ok(Some((made, label)));
    }
    Ok(None)
}

/// `clients` raw clients for `target`'s store and their label, or `None` on memory.
async fn raw_clients(
    target: &Target,
    prefix: &str,
    clients: usize,
) -> Result<Option<(Vec<Box<dyn Cycler>>, String)>> {
    let (mut made, mut label) = (Vec::with_capacity(clients), String::new());
    for index in 0..clients {
        match crate::raw::contender(target, &format!("{prefix}/raw/{index}")).await {
            Some(Ok(client)) => {
                label = client.label;
                made.push(client.cycler);
            }
            None => return Ok(None),
            Some(Err((_, _, error))) => {
                for client in made {
                    close(client).await;
                }
                return Err(error);
            }
        }
    }
    Ok(Some((made, label)))
}

/// Where distsync's clients get their backend.
enum Backends {
    /// One backend for every client (PostgreSQL's, its holds' pool sized to the
    /// clients; memory's one store).
    Shared(Coordinator),
    /// A backend of its own for every client (`distsync::connect`).
    OnePerClient,
}

/// The backends of distsync's clients on `target` and a description of how they are
/// set up.
async fn backends(target: &Target, clients: usize) -> Result<(Backends, String)> {
    #[cfg(feature = "postgres")]
    if target.kind.is_postgres() {
        let free = crate::raw::postgres::free_connections(&target.url).await?;
        let holds = postgres_hold_connections(clients, free);
        let coordinator = postgres_backend(&target.url, holds).await?;
        let setup = format!(
            "{clients} sessions of one backend: hold_connections={holds} (a connection per \
             client{}), its pool {POSTGRES_POOL}, reaper 2; {free} connections were free \
             with the other sides connected",
            if holds < clients as u32 {
                ", had the server room"
            } else {
                ""
            },
        );
        return Ok((Backends::Shared(coordinator), setup));
    }
    let setup = match target.kind {
        BackendKind::Memory => {
            let setup = format!("{clients} sessions on one shared in-process store");
            return Ok((Backends::Shared(target.coordinator.clone()), setup));
        }
        _ => format!("{clients} backends (`distsync::connect`), one session each"),
    };
    Ok((Backends::OnePerClient, setup))
}

/// `clients` distsync clients of `fairness` on `backends`, each its own session and
/// lock name; on an error the ones made are closed.
async fn library_clients(
    target: &Target,
    backends: &Backends,
    prefix: &str,
    clients: usize,
    fairness: Fairness,
) -> Result<Vec<Box<dyn Cycler>>> {
    let slug = match fairness {
        Fairness::Unfair => "unfair",
        _ => "distsync",
    };
    let mut made: Vec<Box<dyn Cycler>> = Vec::with_capacity(clients);
    for index in 0..clients {
        let name = format!("{prefix}/{slug}/{index}");
        let client = match backends {
            Backends::Shared(coordinator) => distsync_with(coordinator, &name, fairness).await,
            Backends::OnePerClient => match target.client().await {
                Ok(coordinator) => distsync_with(&coordinator, &name, fairness).await,
                Err(error) => Err(error),
            },
        };
        match client {
            Ok(client) => made.push(client.cycler),
            Err(error) => {
                for client in made {
                    close(client).await;
                }
                return Err(error);
            }
        }
    }
    Ok(made)
}

/// The holds' pool for `clients` sessions of one PostgreSQL backend when `free`
/// connections are left: a connection per client, or what the free connections allow
/// beside the backend's [`POSTGRES_OTHER_CONNECTIONS`] and 4 spare ones; at
/// least 1.
pub fn postgres_hold_connections(clients: usize, free: usize) -> u32 {
    let room = free.saturating_sub(POSTGRES_OTHER_CONNECTIONS + POSTGRES_SPARE);
    u32::try_from(clients.min(room).max(1)).unwrap_or(u32::MAX)
}

/// A PostgreSQL backend over a pool of [`POSTGRES_POOL`] connections of its own
/// (committing durably, as `backend_from_pool` requires), with `holds` hold
/// connections.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres_backend(url: &str, holds: u32) -> Result<distsync::Coordinator> {
    use sqlx::postgres::PgPoolOptions;
    let config =
        distsync::store::postgres::PostgresConfig::parse(url)?.with_hold_connections(holds)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_POOL)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET synchronous_commit = on")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(config.options.clone().application_name("distsync"))
        .await?;
    let backend = distsync::store::postgres::backend_from_pool(pool, &config).await?;
    Ok(distsync::Coordinator::new(backend))
}
