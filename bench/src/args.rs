//! The command line and the plan (counts and time caps) it resolves to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::target::BackendKind;

/// What the bench measures; each can be selected with `--cases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Case {
    /// Uncontended lock+unlock cycle, beside the raw store commands and the peers.
    Cycle,
    /// Contended hand-off from `unlock()` to the next waiter holding.
    Handoff,
    /// Contended throughput: 2, 8 and 64 clients all cycling one lock, grants per
    /// second (see `crate::contended`).
    Contended,
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
    /// distsync's fair and unfair lock each ÷ as many raw clients (see
    /// `crate::aggregate`).
    Aggregate,
}

/// `distsync-bench`: measures distsync on every backend, beside the raw store commands
/// and peer libraries, and writes markdown tables.
///
/// Servers come from the same variables as the tests (`eval "$(scripts/servers.sh env)"`).
/// All traffic goes to the URLs given, which should be on this machine. The help names
/// each URL's variable but never shows its value, which may hold a password.
#[derive(Parser, Clone, Debug)]
#[command(name = "distsync-bench", version)]
pub struct Args {
    /// Backends to measure, comma-separated [default: memory and every backend
    /// compiled in]. A backend without a URL is reported as skipped.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<BackendKind>,
    /// etcd URL.
    #[arg(long, env = "DISTSYNC_ETCD_URL", hide_env_values = true)]
    pub etcd_url: Option<String>,
    /// Redis URL.
    #[arg(long, env = "DISTSYNC_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "DISTSYNC_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// PostgreSQL URL with unflushed grants (`grants=unflushed`), measured as the
    /// backend `postgres-unflushed`: the lock cases only.
    #[arg(long, env = "DISTSYNC_POSTGRES_UNFLUSHED_URL", hide_env_values = true)]
    pub postgres_unflushed_url: Option<String>,
    /// ZooKeeper URL.
    #[arg(long, env = "DISTSYNC_ZOOKEEPER_URL", hide_env_values = true)]
    pub zookeeper_url: Option<String>,
    /// MySQL/MariaDB URL.
    #[arg(long, env = "DISTSYNC_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: Option<String>,
    /// NATS URL.
    #[arg(long, env = "DISTSYNC_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Directory whose `BENCHMARKS.md` gets the tables (e.g. `docs`).
    /// Without it the tables go to standard output only.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The counts and caps.
    #[command(flatten)]
    pub plan: Plan,
    /// Run the regression guard instead of the report: a short cycle run on etcd,
    /// Redis, PostgreSQL and NATS (and MySQL/MariaDB or ZooKeeper when `--backends`
    /// names it) whose p50 ratios
    /// (distsync ÷ the raw sequence, distsync ÷ each peer) are compared with the
    /// committed baseline (see `--baseline`); exits with 1 when one is worse by more
    /// than the noise allows. See `distsync_bench::guard`.
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
    /// Internal: run only the scale case, on the one backend given, with this run id,
    /// and print its result as JSON (the bench runs the case in a process of its own
    /// this way, see `distsync_bench::scale::isolated`).
    #[arg(long, hide = true)]
    pub scale_child: Option<String>,
}

/// The defaults of a cycle-case count: `guard`'s under `--guard` and
/// `--write-baseline` (`--quick` does not shorten the guard's run), else `quick`'s
/// under `--quick`.
fn guard_or_quick(
    guard: &'static str,
    quick: &'static str,
) -> [(&'static str, &'static str, &'static str); 3] {
    [
        ("guard", "true", guard),
        ("write_baseline", "true", guard),
        ("quick", "true", quick),
    ]
}

/// A number of seconds.
fn secs(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_secs)
}

/// A number of milliseconds.
fn millis(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_millis)
}

/// The counts and caps of one run: each flag's own value, or its default for a full
/// run, for `--quick` (a smoke run) or for the guard. [`Plan::from_args`] completes
/// them.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// A smoke run: tiny counts and short caps (seconds on every backend).
    #[arg(long)]
    pub quick: bool,
    /// Cases to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<Case>,
    /// Whether peers run beside the library in the cycle case.
    #[arg(long = "no-peers", action = ArgAction::SetFalse)]
    #[arg(help = "Skip the peer libraries and programs in the cycle case")]
    pub peers: bool,
    /// Warm-up cycles per implementation, not measured [`--quick`: 2; the guard: 30].
    #[arg(long, default_value_t = 50, default_value_ifs = guard_or_quick("30", "2"))]
    pub warmup: usize,
    /// Measured lock+unlock cycles per implementation [`--quick`: 20; the guard: 3200].
    #[arg(long, default_value_t = 5000, default_value_ifs = guard_or_quick("3200", "20"))]
    pub cycles: usize,
    /// Rounds the cycle case is split into; implementations take turns each round, so
    /// a burst of load on the machine hits all of them alike [`--quick`: 2; the
    /// guard: 16].
    #[arg(long, default_value_t = 30, default_value_ifs = guard_or_quick("16", "2"))]
    pub rounds: usize,
    /// Cycles per turn within a round: `None` runs each contender's whole share of a
    /// round in one turn; `Some(n)` has them take turns of `n` cycles (the guard's
    /// finer interleaving, see [`crate::cycle::run`]).
    #[arg(skip)]
    pub batch: Option<usize>,
    /// Waiter counts for the hand-off case, comma-separated [`--quick`: 1,3].
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100])]
    #[arg(default_values_if("quick", "true", ["1", "3"]))]
    pub waiters: Vec<usize>,
    /// Measured hand-offs per waiter count [`--quick`: 5].
    #[arg(long, default_value_t = 500, default_value_if("quick", "true", "5"))]
    pub handoffs: usize,
    /// Measured leader changes in the election case [`--quick`: 3].
    #[arg(long, default_value_t = 100, default_value_if("quick", "true", "3"))]
    pub elections: usize,
    /// Items per queue run, split among the clients [`--quick`: 16].
    #[arg(long, default_value_t = 1000, default_value_if("quick", "true", "16"))]
    pub queue_items: usize,
    /// Client counts for queue and STM runs.
    #[arg(skip = vec![1, 8])]
    pub clients: Vec<usize>,
    /// Transfers per STM run, split among the workers [`--quick`: 16].
    #[arg(long, default_value_t = 500, default_value_if("quick", "true", "16"))]
    pub stm_transfers: usize,
    /// Scale case: locks held at once at the largest step, one per session (the steps
    /// are a hundredth, a tenth and all of it, unless `--scale-sizes` says) [default:
    /// 10000, or the largest of `--scale-sizes`; `--quick`: 200].
    #[arg(long)]
    pub scale_holds: Option<usize>,
    /// Scale case: the numbers of holds measured, comma-separated, grown in turn (the
    /// largest is `--scale-holds`).
    #[arg(long, value_delimiter = ',')]
    pub scale_sizes: Vec<usize>,
    /// Scale case: the sessions' TTL in seconds; a keepalive window lasts a third of it
    /// (one renewal interval) at every step [`--quick`: 3].
    #[arg(long = "scale-ttl-secs", value_name = "SECS", value_parser = secs)]
    #[arg(default_value = "15", default_value_if("quick", "true", "3"))]
    pub scale_ttl: Duration,
    /// Scale case: sessions waiting, each on one of the held locks [`--quick`: 20].
    #[arg(long, default_value_t = 1000, default_value_if("quick", "true", "20"))]
    pub scale_waiting: usize,
    /// Scale case: waiter counts of the hand-off measured while the locks are held,
    /// comma-separated [`--quick`: 1,10].
    #[arg(long = "scale-waiters", value_delimiter = ',')]
    #[arg(default_values_t = [1, 10, 100, 1000])]
    #[arg(default_values_if("quick", "true", ["1", "10"]))]
    pub scale_handoff_waiters: Vec<usize>,
    /// Contended case: client counts, comma-separated; all clients of a count cycle
    /// one lock.
    #[arg(long, value_delimiter = ',', default_values_t = [2, 8, 64])]
    pub contended_clients: Vec<usize>,
    /// Contended case: measured time per implementation and client count, in
    /// milliseconds [`--quick`: 300].
    #[arg(long = "contended-ms", value_name = "MS", value_parser = millis)]
    #[arg(default_value = "2000", default_value_if("quick", "true", "300"))]
    pub contended_time: Duration,
    /// Contended case: the most clients of a peer that runs a JVM per client
    /// (Curator) [`--quick`: 2].
    #[arg(long, default_value_t = 8, default_value_if("quick", "true", "2"))]
    pub contended_jvm_clients: usize,
    /// Aggregate case: concurrent clients per side (distsync's fair and unfair lock, raw,
    /// the peer).
    #[arg(long, default_value_t = 64)]
    pub aggregate_clients: usize,
    /// Aggregate case: measured time per side, in milliseconds [`--quick`: 500].
    #[arg(long = "aggregate-ms", value_name = "MS", value_parser = millis)]
    #[arg(default_value = "3000", default_value_if("quick", "true", "500"))]
    pub aggregate_time: Duration,
    /// Aggregate case: rounds that time is split into (the sides alternate)
    /// [`--quick`: 2].
    #[arg(long, default_value_t = 6, default_value_if("quick", "true", "2"))]
    pub aggregate_rounds: usize,
    /// Time cap of one measurement, in seconds [`--quick`: 10; the guard: 6, for each
    /// implementation's cycles over all rounds].
    #[arg(long = "case-secs", value_name = "SECS", value_parser = secs)]
    #[arg(default_value = "20", default_value_ifs = guard_or_quick("6", "10"))]
    pub case_time: Duration,
    /// How long a holder (or leader) waits after the last contender has entered its
    /// wait before releasing, in milliseconds, so the release hands over to a queued
    /// waiter rather than racing a late one [`--quick`: 1].
    #[arg(long = "settle-ms", value_name = "MS", value_parser = millis)]
    #[arg(default_value = "5", default_value_if("quick", "true", "1"))]
    pub settle: Duration,
}

impl Args {
    /// The backends selected, each with its URL or the reason it is skipped.
    pub fn selected(&self) -> Vec<(BackendKind, Result<String, String>)> {
        let mut kinds = if self.backends.is_empty() {
            let compiled = BackendKind::value_variants().iter();
            compiled
                .copied()
                .filter(|kind| kind.compiled_in())
                .collect()
        } else {
            self.backends.clone()
        };
        kinds.sort();
        kinds.dedup();
        let url = |kind: BackendKind| {
            if !kind.compiled_in() {
                return Err(format!(
                    "not compiled in: build with `--features {kind}` (or `full`)"
                ));
            }
            let given = match kind {
                BackendKind::Memory => Some("memory://".to_owned()),
                BackendKind::Etcd => self.etcd_url.clone(),
                BackendKind::Redis => self.redis_url.clone(),
                BackendKind::Postgres => self.postgres_url.clone(),
                BackendKind::PostgresUnflushed => self.postgres_unflushed_url.clone(),
                BackendKind::Zookeeper => self.zookeeper_url.clone(),
                BackendKind::Mysql => self.mysql_url.clone(),
                BackendKind::Nats => self.nats_url.clone(),
            };
            given.ok_or_else(|| {
                let variable = kind.url_variable().unwrap_or("its URL");
                format!("no URL: set {variable} (eval \"$(scripts/servers.sh env)\")")
            })
        };
        kinds.into_iter().map(|kind| (kind, url(kind))).collect()
    }
}

/// Sorted, without repeats, each at least 1.
fn counts(mut counts: Vec<usize>) -> Vec<usize> {
    counts.iter_mut().for_each(|count| *count = (*count).max(1));
    counts.sort_unstable();
    counts.dedup();
    counts
}

impl Plan {
    /// The plan `args` ask for: every case when none is named, the counts sorted and at
    /// least 1, and the scale steps grown to the holds.
    pub fn from_args(args: &Args) -> Self {
        let mut plan = args.plan.clone();
        if plan.cases.is_empty() {
            plan.cases = Case::value_variants().to_vec();
        }
        plan.cases.sort();
        plan.cases.dedup();
        plan.waiters = counts(plan.waiters);
        plan.contended_clients = counts(plan.contended_clients);
        plan.scale_handoff_waiters = counts(plan.scale_handoff_waiters);
        let holds = match (plan.scale_holds, plan.scale_sizes.iter().max()) {
            (Some(holds), _) => holds,
            (None, Some(&largest)) => largest,
            (None, None) if plan.quick => 200,
            (None, None) => 10_000,
        }
        .max(1);
        if plan.scale_sizes.is_empty() {
            plan.scale_sizes = vec![holds / 100, holds / 10];
        }
        plan.scale_sizes.retain(|&size| size >= 1 && size <= holds);
        plan.scale_sizes.push(holds);
        plan.scale_sizes = counts(plan.scale_sizes);
        plan.scale_holds = Some(holds);
        for count in [
            &mut plan.cycles,
            &mut plan.rounds,
            &mut plan.handoffs,
            &mut plan.elections,
            &mut plan.queue_items,
            &mut plan.stm_transfers,
            &mut plan.scale_waiting,
            &mut plan.aggregate_clients,
            &mut plan.aggregate_rounds,
        ] {
            *count = (*count).max(1);
        }
        plan.scale_ttl = plan.scale_ttl.max(Duration::from_secs(1));
        plan.aggregate_time = plan.aggregate_time.max(Duration::from_millis(1));
        plan.contended_time = plan.contended_time.max(Duration::from_millis(1));
        plan
    }

    /// Whether `case` is selected.
    pub fn runs(&self, case: Case) -> bool {
        self.cases.contains(&case)
    }
}
