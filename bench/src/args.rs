//! The command line and the plan (counts and time caps) it resolves to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::target::BackendKind;

/// What the bench measures; each can be selected with `--cases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Case {
    /// Uncontended lock+unlock cycle, beside the raw store commands and the peers.
    Cycle,
    /// Contended hand-off from `unlock()` to the next waiter holding.
    Handoff,
    /// `resign()` to the new leader seen by `observe()`.
    Election,
    /// Queue enqueue and dequeue throughput.
    Queue,
    /// STM bank transfers.
    Stm,
    /// At scale, every backend: up to 10,000 locks held and 1,000 waiting from one
    /// process (time to acquire, store connections, keepalive requests/s, client
    /// memory against the number of holds, hand-off up to 1,000 waiters).
    Scale,
    /// 64 concurrent clients, each cycling its own lock: aggregate cycles per second,
    /// distsync ÷ as many raw clients (see `crate::aggregate`).
    Aggregate,
}

impl Case {
    /// Every case, in report order.
    pub const ALL: [Case; 7] = [
        Case::Cycle,
        Case::Handoff,
        Case::Election,
        Case::Queue,
        Case::Stm,
        Case::Scale,
        Case::Aggregate,
    ];
}

/// `distsync-bench`: measures distsync on every backend, beside the raw store commands
/// and peer libraries, and writes markdown tables.
///
/// Servers come from the same variables as the tests (`eval "$(scripts/servers.sh env)"`).
/// All traffic goes to the URLs given, which should be on this machine.
#[derive(Parser, Clone, Debug)]
#[command(name = "distsync-bench", version)]
pub struct Args {
    /// Backends to measure, comma-separated [default: memory and every backend
    /// compiled in]. A backend without a URL is reported as skipped.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<BackendKind>,
    /// etcd URL.
    #[arg(long, env = "DISTSYNC_ETCD_URL")]
    pub etcd_url: Option<String>,
    /// Redis URL.
    #[arg(long, env = "DISTSYNC_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "DISTSYNC_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Directory whose `BENCHMARKS.md` gets the tables (e.g. `docs`).
    /// Without it the tables go to standard output only.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A smoke run: tiny counts and short caps (seconds on every backend).
    #[arg(long)]
    pub quick: bool,
    /// Cases to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<Case>,
    /// Skip the peer libraries and programs in the cycle case.
    #[arg(long)]
    pub no_peers: bool,
    /// Measured lock+unlock cycles per implementation (process-spawning peers do a
    /// tenth of them).
    #[arg(long)]
    pub cycles: Option<usize>,
    /// Waiter counts for the hand-off case, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub waiters: Vec<usize>,
    /// Measured hand-offs per waiter count.
    #[arg(long)]
    pub handoffs: Option<usize>,
    /// Measured leader changes in the election case.
    #[arg(long)]
    pub elections: Option<usize>,
    /// Items per queue run (split among the clients).
    #[arg(long)]
    pub queue_items: Option<usize>,
    /// Transfers per STM run (split among the workers).
    #[arg(long)]
    pub stm_transfers: Option<usize>,
    /// Time cap of one measurement, in seconds.
    #[arg(long)]
    pub case_secs: Option<u64>,
    /// Scale case: locks held at once at the largest step, one per session (the
    /// steps are a hundredth, a tenth and all of it, unless `--scale-sizes` says).
    #[arg(long)]
    pub scale_holds: Option<usize>,
    /// Scale case: the numbers of holds measured, comma-separated, grown in turn
    /// (the largest is `--scale-holds`).
    #[arg(long, value_delimiter = ',')]
    pub scale_sizes: Vec<usize>,
    /// Scale case: the sessions' TTL in seconds; a keepalive window lasts a third of
    /// it (one renewal interval) at every step [default: 15; `--quick`: 3].
    #[arg(long)]
    pub scale_ttl_secs: Option<u64>,
    /// Internal: run only the scale case, on the one backend given, with this run id,
    /// and print its result as JSON (the bench runs the case in a process of its own
    /// this way, see `distsync_bench::scale::isolated`).
    #[arg(long, hide = true)]
    pub scale_child: Option<String>,
    /// Scale case: sessions waiting, each on one of the held locks.
    #[arg(long)]
    pub scale_waiting: Option<usize>,
    /// Scale case: waiter counts of the hand-off measured while the locks are held,
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub scale_waiters: Vec<usize>,
    /// Aggregate case: concurrent clients per side (distsync, raw) [default: 64].
    #[arg(long)]
    pub aggregate_clients: Option<usize>,
    /// Aggregate case: measured time per side, in milliseconds [default: 3000;
    /// `--quick`: 500].
    #[arg(long)]
    pub aggregate_ms: Option<u64>,
    /// Rounds the cycle case is split into (implementations take turns each round)
    /// [default: 30; `--quick`: 2; `--guard`: 16].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Run the regression guard instead of the report: a short cycle run on etcd,
    /// Redis and PostgreSQL whose p50 ratios (distsync ÷ the raw sequence, distsync ÷
    /// each peer) are compared with the committed baseline (see `--baseline`); exits
    /// with 1 when one is worse by more than the noise allows. See `distsync_bench::guard`.
    #[arg(long, conflicts_with = "write_baseline")]
    pub guard: bool,
    /// Measure as `--guard` does, `--repeat` times, and write the baseline file
    /// (the median ratio of the runs and their noise, see `guard::baseline_noise`)
    /// instead of comparing.
    #[arg(long)]
    pub write_baseline: bool,
    /// The baseline file of `--guard` and `--write-baseline` [default: the crate's
    /// `baseline.json`, i.e. `bench/baseline.json`].
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Runs of the guard's measurement that `--write-baseline` takes the median of.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// How long a holder (or leader) waits after the last contender has entered its
    /// wait before releasing, in milliseconds, so the release hands over to a queued
    /// waiter rather than racing a late one.
    #[arg(long)]
    pub settle_ms: Option<u64>,
}

impl Args {
    /// The backends selected, each with its URL or the reason it is skipped.
    pub fn selected(&self) -> Vec<(BackendKind, Result<String, String>)> {
        let args = self;
        let mut kinds = if args.backends.is_empty() {
            BackendKind::ALL
                .into_iter()
                .filter(|kind| kind.compiled_in())
                .collect()
        } else {
            args.backends.clone()
        };
        kinds.sort();
        kinds.dedup();
        kinds
            .into_iter()
            .map(|kind| {
                let url = if !kind.compiled_in() {
                    Err(format!(
                        "not compiled in: build with `--features {kind}` (or `full`)"
                    ))
                } else {
                    let given = match kind {
                        BackendKind::Memory => Some("memory://".to_owned()),
                        BackendKind::Etcd => args.etcd_url.clone(),
                        BackendKind::Redis => args.redis_url.clone(),
                        BackendKind::Postgres => args.postgres_url.clone(),
                    };
                    given.ok_or_else(|| {
                        format!(
                            "no URL: set {} (eval \"$(scripts/servers.sh env)\")",
                            kind.url_variable().unwrap_or("its URL")
                        )
                    })
                };
                (kind, url)
            })
            .collect()
    }
}

/// The counts and caps of one run, with `--quick` and the defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The cases to run.
    pub cases: Vec<Case>,
    /// Whether peers run beside the library in the cycle case.
    pub peers: bool,
    /// Warm-up cycles per implementation (not measured).
    pub warmup: usize,
    /// Measured cycles per implementation.
    pub cycles: usize,
    /// Rounds the cycles are split into; implementations take turns each round, so a
    /// burst of load on the machine hits all of them alike.
    pub rounds: usize,
    /// Cycles per turn within a round: `None` runs each contender's whole share of a
    /// round in one turn; `Some(n)` has them take turns of `n` cycles (the guard's
    /// finer interleaving, see [`crate::cycle::run`]).
    pub batch: Option<usize>,
    /// Waiter counts for the hand-off case.
    pub waiters: Vec<usize>,
    /// Measured hand-offs per waiter count.
    pub handoffs: usize,
    /// Measured leader changes.
    pub elections: usize,
    /// Items per queue run.
    pub queue_items: usize,
    /// Client counts for queue and STM runs.
    pub clients: Vec<usize>,
    /// Transfers per STM run.
    pub stm_transfers: usize,
    /// Scale case: locks held at once at the largest step.
    pub scale_holds: usize,
    /// Scale case: the numbers of holds measured in turn (ascending; the last is
    /// `scale_holds`).
    pub scale_sizes: Vec<usize>,
    /// Scale case: the sessions' TTL.
    pub scale_ttl: Duration,
    /// Scale case: sessions waiting on held locks.
    pub scale_waiting: usize,
    /// Scale case: hand-off waiter counts, measured with the locks held.
    pub scale_handoff_waiters: Vec<usize>,
    /// Aggregate case: concurrent clients per side.
    pub aggregate_clients: usize,
    /// Aggregate case: measured time per side.
    pub aggregate_time: Duration,
    /// Aggregate case: rounds that time is split into (the sides alternate).
    pub aggregate_rounds: usize,
    /// Time cap of one measurement.
    pub case_time: Duration,
    /// See [`Args::settle_ms`].
    pub settle: Duration,
}

impl Plan {
    /// The plan `args` ask for.
    pub fn from_args(args: &Args) -> Self {
        let quick = args.quick;
        let pick = |given: Option<usize>, full: usize, smoke: usize| {
            given.unwrap_or(if quick { smoke } else { full }).max(1)
        };
        let mut cases = if args.cases.is_empty() {
            Case::ALL.to_vec()
        } else {
            args.cases.clone()
        };
        cases.sort();
        cases.dedup();
        let mut waiters = if args.waiters.is_empty() {
            if quick {
                vec![1, 3]
            } else {
                vec![1, 10, 100]
            }
        } else {
            args.waiters.iter().map(|&w| w.max(1)).collect()
        };
        waiters.sort_unstable();
        waiters.dedup();
        let mut scale_handoff_waiters = if args.scale_waiters.is_empty() {
            if quick {
                vec![1, 10]
            } else {
                vec![1, 10, 100, 1000]
            }
        } else {
            args.scale_waiters.iter().map(|&w| w.max(1)).collect()
        };
        scale_handoff_waiters.sort_unstable();
        scale_handoff_waiters.dedup();
        let scale_holds = match args.scale_sizes.iter().max() {
            Some(&largest) if args.scale_holds.is_none() => largest.max(1),
            _ => pick(args.scale_holds, 10_000, 200),
        };
        let mut scale_sizes: Vec<usize> = if args.scale_sizes.is_empty() {
            vec![scale_holds / 100, scale_holds / 10, scale_holds]
        } else {
            args.scale_sizes.clone()
        };
        scale_sizes.retain(|&size| size >= 1 && size <= scale_holds);
        scale_sizes.push(scale_holds);
        scale_sizes.sort_unstable();
        scale_sizes.dedup();
        Self {
            cases,
            peers: !args.no_peers,
            warmup: if quick { 2 } else { 50 },
            cycles: pick(args.cycles, 5000, 20),
            rounds: args.rounds.unwrap_or(if quick { 2 } else { 30 }).max(1),
            batch: None,
            waiters,
            handoffs: pick(args.handoffs, 500, 5),
            elections: pick(args.elections, 100, 3),
            queue_items: pick(args.queue_items, 1000, 16),
            clients: vec![1, 8],
            stm_transfers: pick(args.stm_transfers, 500, 16),
            scale_holds,
            scale_sizes,
            scale_ttl: Duration::from_secs(
                args.scale_ttl_secs
                    .unwrap_or(if quick { 3 } else { 15 })
                    .max(1),
            ),
            scale_waiting: pick(args.scale_waiting, 1_000, 20),
            scale_handoff_waiters,
            aggregate_clients: args.aggregate_clients.unwrap_or(64).max(1),
            aggregate_time: Duration::from_millis(
                args.aggregate_ms
                    .unwrap_or(if quick { 500 } else { 3000 })
                    .max(1),
            ),
            aggregate_rounds: if quick { 2 } else { 6 },
            case_time: Duration::from_secs(args.case_secs.unwrap_or(if quick { 10 } else { 20 })),
            settle: Duration::from_millis(args.settle_ms.unwrap_or(if quick { 1 } else { 5 })),
        }
    }

    /// Whether `case` is selected.
    pub fn runs(&self, case: Case) -> bool {
        self.cases.contains(&case)
    }
}
