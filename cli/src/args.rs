//! The command line's grammar (clap).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::duration;
use crate::items::Encoding;

const LONG_ABOUT: &str = "\
Distributed locks, leader elections, read-write locks, queues, barriers and STM from \
the shell, over etcd, Redis, PostgreSQL, ZooKeeper, MySQL/MariaDB, NATS JetStream or an \
in-process memory store.

Results are lines on standard output, stable and meant to be parsed; errors go to \
standard error, and so do logs (filter them with RUST_LOG, default `warn,sqlx=error`).";

/// The exit-code table, in `-h` and `--help` alike (the same as in `cli/README.md`); a
/// macro, since `concat!` takes literals only.
macro_rules! exit_code_table {
    () => {
        "\
Exit codes:
  0      success
  1      nothing to take now or in time: the queue is empty or the lock, hold or permit
         is taken elsewhere (--no-wait), or --timeout passed first
  2      bad arguments or configuration: a bad flag or value, no backend, a bad URL, a
         backend not compiled in, an invalid name, a primitive or isolation level the
         backend does not offer
  3      the session was lost (expired, revoked, connection gone) while something was
         held or awaited
  4      the store or the operation failed: a connection or store error, a refused or
         unverified migration, a changed STM bank sum, output that could not be written
  130    interrupted by SIGINT (Ctrl-C) or SIGTERM, after releasing what was held
  CMD's  with `-- CMD` (lock, rwlock, semaphore, elect, queue receive, ratelimit): CMD's
         exit code
         (128+N if signal N killed it; 126 if CMD could not be run, 127 if not found)"
    };
}

/// `-h` after the options: the exit codes and the URL schemes of [`distsync::store::DRIVERS`].
fn short_after_help() -> String {
    let schemes: Vec<String> = distsync::store::DRIVERS
        .iter()
        .flat_map(|driver| driver.schemes.iter().map(|scheme| format!("{scheme}://")))
        .collect();
    // Wrapped as the rest of the help is, within 88 columns.
    let mut text = format!("{}\n\nBackends:", exit_code_table!());
    let mut width = "Backends:".len();
    for (index, scheme) in schemes.iter().enumerate() {
        let comma = if index + 1 < schemes.len() { "," } else { "" };
        let word = format!("{scheme}{comma}");
        if width + 1 + word.len() > 88 {
            text.push('\n');
            width = 0;
        } else {
            text.push(' ');
            width += 1;
        }
        width += word.len();
        text.push_str(&word);
    }
    text.push_str("\n(every URL form and its parameters: --help)");
    text
}

/// `--help` after the options: the exit codes with what happens to CMD, each driver's
/// URL forms (a driver whose cargo feature is off says so), the durations.
fn long_after_help() -> String {
    let mut backends = String::new();
    for driver in distsync::store::DRIVERS {
        if driver.built {
            for line in driver.url_forms.lines() {
                backends.push_str("  ");
                backends.push_str(line);
                backends.push('\n');
            }
        } else {
            let schemes: Vec<String> = driver.schemes.iter().map(|s| format!("{s}://")).collect();
            backends.push_str(&format!(
                "  {}\n      cargo feature `{}`, not built into this binary\n",
                schemes.join(", "),
                driver.name
            ));
        }
    }
    format!(
        "{}{LONG_AFTER_HELP_CMD}{backends}{LONG_AFTER_HELP_END}",
        exit_code_table!()
    )
}

/// The part of `--help` between the exit codes and the URL forms.
const LONG_AFTER_HELP_CMD: &str = "
  With `-- CMD`, exit code 1 (or 2, 3, 4) may also be CMD's own: the result line
  (`NAME key=...`) comes only once held, so a script that needs to tell them apart reads
  it. CMD is stopped before the store can give the hold (or a received item) to anyone
  else: once renewals of the session fail, CMD gets SIGTERM --grace before the
  session's client-side deadline (at once if less remains), and SIGKILL at that deadline
  if it is still running; when the session is lost, SIGTERM at once and SIGKILL at the
  deadline at the latest. distsync then exits with 3, except `elect` without --once,
  which campaigns again on a fresh session once CMD has exited.

Backends (URL in --backend, DISTSYNC_URL or the file of --backend-file):
";

/// The part of `--help` after the URL forms.
const LONG_AFTER_HELP_END: &str =
    "  Every network URL also takes connect_timeout=DURATION and timeout=DURATION (one
  request). Install with every backend: cargo install --path cli --features full

Durations (--timeout, --ttl, --grace, schedule's EVERY and its flags, and the URLs'
timeouts): `1500ms`, `2s`, `1m`, `1h`, the unit always written; a bare number is refused
(`--ttl 30` could mean 30 s or 30 ms), except `--grace 0`.";

/// The command line's full grammar with its help texts: [`Cli`]'s, and after the
/// options the parts read from the driver list at run time.
pub(crate) fn command() -> clap::Command {
    Cli::command()
        .after_help(short_after_help())
        .after_long_help(long_after_help())
}

/// Parses the process's arguments with [`command`]; on bad arguments or `--help`, prints
/// and exits as clap does.
pub(crate) fn parse() -> Cli {
    let mut matches = command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| error.exit())
}

/// `distsync`: distributed concurrency primitives from the shell.
#[derive(Debug, Parser)]
#[command(
    name = "distsync",
    version,
    about = "Distributed locks, elections, queues, barriers and STM over etcd, Redis, PostgreSQL, \
             ZooKeeper, MySQL, NATS or memory",
    long_about = LONG_ABOUT,
)]
pub(crate) struct Cli {
    /// The store's URL: memory://, etcd://…, redis://…, rediss://…, redis+sentinel://…,
    /// redis+cluster://…, postgres://…, zk://…, mysql://…, nats://… (forms: --help)
    // The help names the variable but never shows its value, which may hold a password.
    #[arg(
        long,
        env = "DISTSYNC_URL",
        hide_env_values = true,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub backend: Option<String>,

    /// Read the store's URL from this file (its first line), so that a URL with a
    /// password never appears on a command line or in the process list. Also
    /// DISTSYNC_URL_FILE. Overrides --backend.
    #[arg(
        long,
        env = "DISTSYNC_URL_FILE",
        hide_env_values = true,
        global = true,
        help_heading = "Global options",
        value_name = "PATH"
    )]
    pub backend_file: Option<std::path::PathBuf>,

    /// Session TTL, for what is held through a session (locks, candidacies,
    /// double-barrier entries, received queue items): a crashed distsync releases them
    /// after this long. `1500ms`, `2s`, `1m`: the unit is required.
    #[arg(long, global = true, help_heading = "Global options", value_name = "DURATION", default_value = "15s",
          value_parser = duration::positive)]
    pub ttl: Duration,

    /// How long CMD (of `... -- CMD`) gets between SIGTERM and SIGKILL when the
    /// session's renewals fail: SIGTERM comes this long before the session's
    /// client-side deadline (at once if less remains), SIGKILL at the deadline.
    /// `1500ms`, `2s`, `1m`, or `0`: the unit is required otherwise.
    #[arg(long, global = true, help_heading = "Global options", value_name = "DURATION", default_value = "5s",
          value_parser = duration::grace)]
    pub grace: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Acquire a lock, print `NAME key=<key> token=<token>`, and hold it while CMD runs
    /// (or until interrupted, without CMD).
    Lock(LockArgs),
    /// Campaign and stay leader: run CMD while leading (or hold until interrupted),
    /// campaigning again after every loss (--once: exit); or (--listen) print every
    /// leader change.
    ///
    /// Every win prints `leader NAME value=<value> term=<term>`. With `-- CMD`, CMD
    /// starts on every win; when leadership or its session is lost, CMD is stopped as
    /// `lock -- CMD` stops it (SIGTERM, then SIGKILL by the session's client-side
    /// deadline, before anyone else can be elected), the loss is reported on standard
    /// error, and once CMD has exited distsync campaigns again on a fresh session
    /// (pausing 100 ms, doubling up to 5 s, while the store cannot be reached). When CMD
    /// exits by itself, distsync resigns and exits with CMD's code. Without CMD,
    /// distsync holds leadership until SIGINT or SIGTERM (then resigns, exit 130),
    /// printing a new `leader` line each time it is elected again after a loss.
    ///
    /// With --once, distsync campaigns once: a loss stops CMD and exits with 3.
    #[command(after_long_help = ELECT_AFTER_HELP)]
    Elect(ElectArgs),
    /// Acquire a read or write lock and hold it while CMD runs (or until interrupted).
    Rwlock(RwLockArgs),
    /// Acquire one of N permits of a counting semaphore, print `NAME key=<key>
    /// token=<token>`, and hold it while CMD runs (or until interrupted).
    Semaphore(SemaphoreArgs),
    /// Push to, pop from, receive from (at least once, optionally into CMD) or count a
    /// durable (priority) queue.
    Queue(QueueArgs),
    /// Hold, release or wait on a barrier.
    Barrier(BarrierArgs),
    /// Read, add to, compare-and-set or watch a shared counter (`distsync counter NAME
    /// [get|add N|cas OLD NEW|watch]`).
    Counter(CounterArgs),
    /// Count down, wait on or read a count-down latch of COUNT.
    Latch(LatchArgs),
    /// Take one permit of the rate limiter NAME at N/PERIOD (`100/1s`, `5/min`), waiting
    /// until it is due on the store's clock, then run CMD in distsync's place (exit code:
    /// CMD's). With --no-wait or --timeout, exit 1 when no permit is due (in time).
    Ratelimit(RatelimitArgs),
    /// Run CMD once per occurrence of EVERY across every process scheduling NAME: cron
    /// plus flock for a fleet. EVERY is a duration (`30s`, `5m`, the unit required) counted
    /// from the UNIX epoch, or a cron expression in UTC (`'0 2 * * *'`, six fields with
    /// seconds first). Each run prints `NAME occurrence=<unix ms> token=<token>`; CMD
    /// gets DISTSYNC_FENCING_TOKEN, DISTSYNC_LOCK_KEY, DISTSYNC_OCCURRENCE_MS,
    /// DISTSYNC_STARTED_MS (the run's start as recorded) and
    /// DISTSYNC_PREVIOUS_OCCURRENCE_MS (empty before the first run). CMD is stopped as
    /// `lock -- CMD` stops it when the job's lock is lost, and also once it has run
    /// --at-most. A CMD that fails is reported and the schedule goes on; distsync runs
    /// until SIGINT or SIGTERM (exit 130).
    Schedule(ScheduleArgs),
    /// Enter a double barrier of COUNT participants, print `entered`, wait for a line
    /// (or end) on standard input, leave, print `left`.
    DoubleBarrier(DoubleBarrierArgs),
    /// Run the STM bank-transfer demo and print the final sum.
    StmBank(StmBankArgs),
    /// Read commands line by line from standard input, as etcd's Go demo programs do,
    /// so that two terminals can play the demo against any backend.
    #[command(visible_alias = "repl")]
    Interactive(InteractiveArgs),
    /// Copy the durable state (queues with order and priorities, STM keys, held
    /// barriers) from the store --from into the store --to and verify it arrived;
    /// refuses while the source has live holds unless --force. Ignores --backend.
    Migrate(MigrateArgs),
    /// Show who holds what under PREFIX (all names without it): locks with holder,
    /// token and waiters in order, leaders with value and term, read-write locks,
    /// semaphore permits, queue lengths, held barriers. Reads only.
    Status(StatusArgs),
    /// Break the lock NAME: end its holder's session in the store (every hold of that
    /// session is lost; on ZooKeeper the hold alone), print `broke NAME session=<id>
    /// token=<token> held_for=<ms> since=<unix time> key=<key>`. Exit 1 when nobody
    /// holds it.
    #[command(after_help = BREAK_AFTER_HELP)]
    Break(BreakArgs),
    /// Serve the operators' web console over the store: who holds what (locks,
    /// read-write locks, semaphores, elections, groups, shard owners, queues with their
    /// dead letters, sessions), read once per --refresh however many pages are open;
    /// actions (break a lock, ask its holder to release, ask a leader to hand over,
    /// requeue or drop a dead letter) only with --actions-token-file; Prometheus metrics
    /// at /metrics. Listens on loopback unless told otherwise; runs until interrupted.
    Console(ConsoleArgs),
    /// Ask the holder of the lock NAME to release it (cooperative revocation: nothing is
    /// taken away; a `distsync lock --revocable` holder stops its CMD), print `asked
    /// NAME token=<token> key=<key>`. Exit 1 when nobody holds it.
    Revoke(RevokeArgs),
    /// List a group's live members (`distsync group NAME members`: one line per member,
    /// `member ID session=<id> token=<token> metadata=<value>`), or follow its joins and
    /// leaves (`distsync group NAME watch`: `joined ...`/`left ...` lines until
    /// interrupted).
    Group(GroupArgs),
    /// Own a share of COUNT shards of the group NAME (spread over its live members by
    /// rendezvous hashing, each shard a fenced hold) and run CMD with them: CMD gets
    /// DISTSYNC_SHARDS (the owned shards, comma-separated, ascending),
    /// DISTSYNC_SHARD_TOKENS (`shard:token` pairs), DISTSYNC_SHARD_COUNT and
    /// DISTSYNC_MEMBER. When the owned shards change, CMD gets SIGTERM and starts again
    /// with the new ones; a shard going to another member is released only once CMD has
    /// exited. When shards are lost, CMD is stopped as `lock -- CMD` stops it. When CMD
    /// exits by itself, distsync leaves the group and exits with CMD's code.
    Shards(ShardsArgs),
    /// Print a completion script for SHELL to standard output (no backend needed), e.g.
    /// `distsync completions bash > /etc/bash_completion.d/distsync`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output (no backend needed), e.g.
    /// `distsync man | man -l -`.
    Man,
}

impl Command {
    /// The primitive names the command uses, to validate before connecting.
    pub(crate) fn names(&self) -> Vec<String> {
        match self {
            Command::Lock(args) => vec![args.name.clone()],
            Command::Elect(args) => vec![args.name.clone()],
            Command::Rwlock(args) => vec![args.name.clone()],
            Command::Semaphore(args) => vec![args.name.clone()],
            Command::Queue(args) => vec![args.name.clone()],
            Command::Barrier(args) => vec![args.name.clone()],
            Command::Counter(args) => vec![args.name.clone()],
            Command::Latch(args) => vec![args.name.clone()],
            Command::Ratelimit(args) => vec![args.name.clone()],
            Command::Schedule(args) => vec![args.name.clone()],
            Command::DoubleBarrier(args) => vec![args.name.clone()],
            Command::StmBank(args) => vec![format!("{}/0", args.prefix)],
            Command::Interactive(args) => vec![args.name.clone()],
            Command::Break(args) => vec![args.name.clone()],
            Command::Revoke(args) => vec![args.name.clone()],
            Command::Group(args) => vec![args.name.clone()],
            Command::Shards(args) => vec![args.name.clone()],
            Command::Migrate(_)
            | Command::Status(_)
            | Command::Console(_)
            | Command::Completions { .. }
            | Command::Man => Vec::new(),
        }
    }

    /// Whether the command works on the store of `--backend` (all but `migrate`, which
    /// names its two stores itself, and the generated completions and man page).
    pub(crate) fn needs_backend(&self) -> bool {
        !matches!(
            self,
            Command::Migrate(_) | Command::Completions { .. } | Command::Man
        )
    }
}

/// How long to wait for what a command acquires or takes: `--timeout` or `--no-wait`.
#[derive(Clone, Copy, Debug, Default, Args)]
pub(crate) struct WaitArgs {
    /// Give up with exit code 1 if nothing is acquired (or received) within DURATION:
    /// `1500ms`, `2s`, `1m` (the unit required). Counts from when the session is
    /// open; connecting is bounded by the URL's timeouts.
    #[arg(long, value_name = "DURATION", value_parser = duration::positive,
          conflicts_with = "no_wait")]
    pub timeout: Option<Duration>,
    /// Try once, without waiting: exit code 1 (printing nothing on standard output) if
    /// it is taken elsewhere or the queue is empty.
    #[arg(long)]
    pub no_wait: bool,
}

/// `distsync elect --help` after the options.
const ELECT_AFTER_HELP: &str = "\
Examples:
  # One scheduler at a time, started again wherever leadership goes:
  distsync elect scheduler \"$(hostname)\" -- ./scheduler
  # Run once as leader; exit 3 if leadership is lost meanwhile:
  distsync elect --once nightly \"$(hostname)\" -- ./nightly.sh
  # `<value> term=<term>` for the current leader and every change:
  distsync elect --listen scheduler";

/// `distsync lock`.
#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// How long to wait for the lock.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// After a holder lost the lock without releasing it (crashed, cut off, expired),
    /// withhold the next grant for DURATION (`1500ms`, `5s`, `1m`: the unit
    /// required), for a CMD whose resource cannot check DISTSYNC_FENCING_TOKEN.
    /// Every process locking NAME should pass the same value.
    #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
    pub lock_delay: Option<Duration>,
    /// Take the unfair lock: the first to ask after a release gets it, not the longest
    /// waiter, for more grants per second under contention (see docs/GUARANTEES.md,
    /// "Fair or unfair lock"). Every process locking NAME should pass it or none.
    #[arg(long)]
    pub unfair: bool,
    /// Let go when asked: when someone asks for the lock back (`distsync revoke NAME`),
    /// send CMD SIGTERM (without CMD: release the lock and exit 0). The lock stays
    /// held until CMD exits.
    #[arg(long)]
    pub revocable: bool,
    /// The command to run while holding the lock, after `--`. It gets DISTSYNC_LOCK_KEY
    /// and DISTSYNC_FENCING_TOKEN in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync semaphore`.
#[derive(Debug, Args)]
pub(crate) struct SemaphoreArgs {
    /// The semaphore's name.
    pub name: String,
    /// How many holders it admits at once (every client must name the same count).
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub permits: u32,
    /// How long to wait for a permit.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The command to run while holding a permit, after `--`. It gets
    /// DISTSYNC_LOCK_KEY and DISTSYNC_FENCING_TOKEN in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync ratelimit`.
#[derive(Debug, Args)]
pub(crate) struct RatelimitArgs {
    /// The rate limiter's name.
    pub name: String,
    /// The rate, N permits per PERIOD: `100/1s`, `5/min`, `10/250ms` (every client of
    /// one limiter must name the same rate).
    #[arg(value_name = "N/PERIOD")]
    pub rate: String,
    /// The most permits granted at once from idle (default: N).
    #[arg(long, value_name = "B")]
    pub burst: Option<u32>,
    /// How long to wait for the permit (waiting until it is due is the default).
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The command to run once the permit is taken, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync schedule`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// The job's name (its lock's; its record is the STM key NAME.distsync-scheduled-job).
    pub name: String,
    /// A duration (`30s`, `5m`, `1h`: the unit required) or a cron expression (UTC).
    pub every: String,
    /// Stop CMD once it has run this long (SIGTERM, then SIGKILL by the session's
    /// deadline); also the most a crashed run blocks the job (capped at 15 s and at
    /// --ttl).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration::positive)]
    pub at_most: Duration,
    /// Start no run sooner than this after the previous run started, on any process,
    /// across restarts (kept in the store).
    #[arg(long, value_name = "DURATION", value_parser = duration::grace)]
    pub at_least: Option<Duration>,
    /// Run once, at once, for the occurrences missed while no process ran the job (by
    /// default they are skipped: an occurrence runs only if it starts within
    /// --skip-after of its time).
    #[arg(long)]
    pub catch_up: bool,
    /// Without --catch-up, how late an occurrence may still start (default: half the
    /// gap to the next occurrence, at most 1m).
    #[arg(long, value_name = "DURATION", value_parser = duration::grace, conflicts_with = "catch_up")]
    pub skip_after: Option<Duration>,
    /// Print the job's last run (from the store) and its next occurrence, as `job NAME
    /// last=<ms> started=<ms> token=<token> runs=<n> next=<ms>` (`-` before the first
    /// run; times in milliseconds since the UNIX epoch), and exit; no CMD.
    #[arg(long, conflicts_with_all = ["catch_up", "skip_after", "at_least"])]
    pub status: bool,
    /// The command to run for each occurrence, after `--`.
    #[arg(last = true, required_unless_present = "status", value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync elect`.
#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    /// Print every leader change (`<value> term=<term>` per line) instead of
    /// campaigning.
    #[arg(long, conflicts_with_all = ["value", "once", "command"])]
    pub listen: bool,
    /// Campaign once: when leadership is lost, stop CMD and exit with 3 instead of
    /// campaigning again.
    #[arg(long)]
    pub once: bool,
    /// While waiting in line, ask the leader to hand over to this candidate (the leader
    /// decides: see --hand-over-on-request).
    #[arg(long, conflicts_with = "listen")]
    pub prefer: bool,
    /// While leader, hand over to a candidate that asks (--prefer): CMD gets SIGTERM,
    /// and once it has exited the leadership goes to that candidate (never two leaders;
    /// no moment without one where the store allows it), and distsync exits with CMD's
    /// code (0 without CMD).
    #[arg(long, conflicts_with = "listen")]
    pub hand_over_on_request: bool,
    /// The election's name.
    pub name: String,
    /// The value to campaign with (required unless --listen).
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
    /// The command to run while leader, after `--`: started on every win, stopped on
    /// every loss. It gets DISTSYNC_FENCING_TOKEN (the term) and DISTSYNC_ELECTION (the
    /// name) in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RwMode {
    /// A shared hold (no fencing token).
    Read,
    /// The exclusive hold (with a fencing token).
    Write,
}

/// `distsync rwlock`.
#[derive(Debug, Args)]
pub(crate) struct RwLockArgs {
    /// The lock's name.
    pub name: String,
    /// Which hold to take.
    pub mode: RwMode,
    /// How long to wait for the hold.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The command to run while holding, after `--` (DISTSYNC_LOCK_KEY, and for a write
    /// hold DISTSYNC_FENCING_TOKEN, in its environment).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync queue`.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// The queue's name.
    pub name: String,
    /// What to do with it.
    #[command(subcommand)]
    pub action: QueueAction,
}

/// How queue items are written and read: `--format` or `-0`.
#[derive(Clone, Copy, Debug, Args)]
pub(crate) struct FormatArgs {
    /// How items are written and read: `text`, one per line (an item holding a newline
    /// does not survive); `json`, one JSON value per line, a string when the item is
    /// UTF-8, else {"base64": "..."} (every item survives); `null`, as -0.
    #[arg(long, value_enum, default_value_t = Encoding::Text)]
    pub format: Encoding,
    /// Raw bytes, each item terminated by NUL (as `xargs -0`): every item without a NUL
    /// byte survives. Same as `--format null`.
    #[arg(short = '0', long = "null", conflicts_with = "format")]
    pub null: bool,
}

impl FormatArgs {
    /// The encoding asked for.
    pub(crate) fn encoding(self) -> Encoding {
        if self.null {
            Encoding::Null
        } else {
            self.format
        }
    }
}

/// What to do with a queue.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueAction {
    /// Append ITEM, or every item read from standard input without ITEM (prints
    /// nothing). Standard input is read to its end and decoded before anything is
    /// pushed, so malformed input pushes nothing.
    Push {
        /// The item (its bytes as given; with --format json, a JSON string or
        /// {"base64": "..."}). Without it, items come from standard input.
        item: Option<OsString>,
        /// Lower numbers come out first; FIFO within a priority.
        #[arg(long, default_value_t = 0)]
        priority: u16,
        /// An idempotency key (1-128 of A-Z a-z 0-9 . _ : -): the push appends nothing
        /// if KEY was pushed to this queue within the last 24 hours, so running it again
        /// (after a failure, from another host) is harmless. One item only.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// How ITEM or standard input is decoded.
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove the first item and print it, waiting for one if the queue is empty.
    /// At most once: the item is gone from the queue before it is printed.
    Pop {
        /// How long to wait for an item.
        #[command(flatten)]
        wait: WaitArgs,
        /// How the item is printed.
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Receive the first item (at least once). Without CMD: print it and acknowledge it
    /// as soon as it is written and flushed to standard output (before whoever reads
    /// standard output has done anything with it); a failed write puts it back. With
    /// `-- CMD`: run CMD with the item's bytes as its standard input; acknowledge when
    /// CMD exits 0, put the item back (nack) otherwise, and exit with CMD's code.
    #[command(after_help = "\
Until it is acknowledged, the item is held through this process's session: if distsync \
dies, the item goes back to its place when the session ends (--ttl after the last \
renewal), with its redelivery count one higher. With CMD: CMD's standard input is the \
item's bytes exactly (no newline added), then end of input; its environment has \
DISTSYNC_QUEUE (the queue's name) and DISTSYNC_REDELIVERIES (0 on the first delivery). \
distsync prints nothing itself. CMD exiting 0 acknowledges; any other exit, a signal, or \
SIGINT/SIGTERM sent to distsync (forwarded to CMD; exit 130) puts the item back. If the \
session fails while CMD runs, CMD is stopped before the item can go to another consumer \
and distsync exits with 3.")]
    Receive {
        /// How long to wait for an item.
        #[command(flatten)]
        wait: WaitArgs,
        /// How the item is printed (without CMD).
        #[command(flatten)]
        format: FormatArgs,
        /// The command to process the item, after `--`.
        #[arg(last = true, value_name = "CMD", conflicts_with_all = ["format", "null"])]
        command: Vec<OsString>,
    },
    /// Print how many items are queued.
    Len,
    /// The queue's dead-letter queue, where `distsync::queue::Consumer` moves items delivered
    /// too many times: `list` prints its items, `redrive` moves them back to the tail
    /// of NAME (once the bug that made them fail is fixed), `purge` deletes them;
    /// `redrive` and `purge` print how many.
    Dead {
        /// What to do with the dead letters.
        #[command(subcommand)]
        action: DeadAction,
        /// The dead-letter queue's name, when the consumer was given one (its
        /// `ConsumerOptions::dead_letter`); NAME.dead otherwise.
        #[arg(long, value_name = "QUEUE", global = true)]
        dead_letter: Option<String>,
    },
}

/// What to do with a queue's dead letters.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadAction {
    /// Print every dead-lettered item, in queue order, leaving them in place. Each is
    /// held for a moment (through a session of its own) to be read, so a concurrent
    /// `redrive` or `purge` may skip it.
    List {
        /// How the items are printed.
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Move every dead-lettered item back to the tail of NAME; print how many. A crash
    /// part-way leaves an item in both queues, never in neither.
    Redrive,
    /// Delete every dead-lettered item; print how many.
    Purge,
}

/// What to do with a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BarrierAction {
    /// Raise the barrier (prints `held`).
    Hold,
    /// Lower it, letting every waiter through (prints `released`).
    Release,
    /// Wait until it is not held (prints `passed`).
    Wait,
}

/// `distsync barrier`.
#[derive(Debug, Args)]
pub(crate) struct BarrierArgs {
    /// The barrier's name.
    pub name: String,
    /// What to do.
    pub action: BarrierAction,
}

/// What to do with a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Subcommand)]
pub(crate) enum CounterAction {
    /// Print the value (0 if never written).
    Get,
    /// Add N (may be negative) and print the new value.
    Add {
        /// The amount to add.
        #[arg(allow_negative_numbers = true)]
        delta: i64,
    },
    /// Set the value to NEW if it is OLD: print `swapped`, or `unchanged` and exit 1.
    Cas {
        /// The value expected.
        #[arg(allow_negative_numbers = true)]
        old: i64,
        /// The value to set.
        #[arg(allow_negative_numbers = true)]
        new: i64,
    },
    /// Print the value, then each new value as it changes (through the store's
    /// notifications), until interrupted or after `--changes N`.
    Watch {
        /// Exit (0) after this many changes.
        #[arg(long, value_name = "N")]
        changes: Option<u64>,
    },
}

/// `distsync counter`.
#[derive(Debug, Args)]
pub(crate) struct CounterArgs {
    /// The counter's name.
    pub name: String,
    /// What to do (default: get).
    #[command(subcommand)]
    pub action: Option<CounterAction>,
}

/// What to do with a count-down latch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LatchAction {
    /// Count down once and print the remaining count.
    CountDown,
    /// Wait until the count is zero (prints `open`).
    Wait,
    /// Print the remaining count.
    Count,
}

/// What to do with a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum GroupAction {
    /// List the live members.
    Members,
    /// Print joins and leaves as they are seen, until interrupted.
    Watch,
}

/// `distsync group`.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The group's name.
    pub name: String,
    /// What to do.
    pub action: GroupAction,
    /// How often `watch` reads the member list (`500ms`, `2s`: the unit required).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration::positive)]
    pub poll: Duration,
}

/// `distsync shards`.
#[derive(Debug, Args)]
pub(crate) struct ShardsArgs {
    /// The group's name.
    pub name: String,
    /// How many shards the group has (every member gives the same).
    pub count: u32,
    /// This member's id, unique among the live members (default: the host name and
    /// process id).
    #[arg(long, value_name = "ID")]
    pub member: Option<String>,
    /// Metadata other processes read in `distsync group NAME members`.
    #[arg(long, value_name = "VALUE", default_value = "")]
    pub metadata: String,
    /// How often the member list is read (`500ms`, `2s`: the unit required).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration::positive)]
    pub poll: Duration,
    /// The command to run with the owned shards.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// `distsync latch`.
#[derive(Debug, Args)]
pub(crate) struct LatchArgs {
    /// The latch's name.
    pub name: String,
    /// The latch's initial count (every user of the latch gives the same).
    pub count: u64,
    /// What to do.
    pub action: LatchAction,
}

/// `distsync double-barrier`.
#[derive(Debug, Args)]
pub(crate) struct DoubleBarrierArgs {
    /// The barrier's name.
    pub name: String,
    /// How many participants enter and leave together.
    pub count: usize,
}

/// An STM isolation level, as on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// Snapshot reads, read and write sets checked at commit (the default).
    SerializableSnapshot,
    /// Snapshot reads, read set checked at commit.
    Serializable,
    /// Repeatable reads, read set checked at commit.
    RepeatableReads,
    /// Latest reads, nothing checked: lost updates are possible.
    ReadCommitted,
}

impl From<IsolationArg> for distsync::stm::Isolation {
    fn from(level: IsolationArg) -> Self {
        match level {
            IsolationArg::SerializableSnapshot => distsync::stm::Isolation::SerializableSnapshot,
            IsolationArg::Serializable => distsync::stm::Isolation::Serializable,
            IsolationArg::RepeatableReads => distsync::stm::Isolation::RepeatableReads,
            IsolationArg::ReadCommitted => distsync::stm::Isolation::ReadCommitted,
        }
    }
}

/// `distsync stm-bank`.
#[derive(Debug, Args)]
pub(crate) struct StmBankArgs {
    /// How many accounts (each starts with 100).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub accounts: u32,
    /// How many concurrent workers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub workers: u32,
    /// How many transfers each worker makes.
    #[arg(long, default_value_t = 100)]
    pub transfers: u32,
    /// The STM isolation level of every transaction.
    #[arg(long, value_enum, default_value_t = IsolationArg::SerializableSnapshot)]
    pub isolation: IsolationArg,
    /// The accounts' key prefix: accounts are PREFIX/0, PREFIX/1, …
    #[arg(long, default_value = "accts")]
    pub prefix: String,
    /// Attempts per transfer before giving up on conflicts.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
}

/// Which demo program to play interactively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReplKind {
    /// `elect [VALUE]`, `proclaim [VALUE]`, `resign`, `watch`, `query`, `rev`.
    Election,
    /// `lock`, `unlock`.
    Lock,
    /// `r` (read lock), `w` (write lock), `unlock`.
    Rwlock,
    /// `push ITEM [PRIORITY]`, `pop`, `len`.
    Queue,
}

/// `distsync interactive`.
#[derive(Debug, Args)]
#[command(after_help = "\
Commands (one per line; `help` lists them, `quit`/`exit` or end of input ends the session, \
releasing what is held):
  election: elect [VALUE]  proclaim [VALUE]  resign  watch  query  rev
  lock:     lock  unlock
  rwlock:   r  w  unlock
  queue:    push ITEM [PRIORITY]  pop  len
Without VALUE, elect and proclaim use `value-<id>-<count>` as the Go demo does.")]
pub(crate) struct InteractiveArgs {
    /// Which demo.
    pub kind: ReplKind,
    /// The primitive's name.
    pub name: String,
    /// This node's id, for the default election values `value-<id>-<count>` (default:
    /// the process id).
    #[arg(long)]
    pub id: Option<u64>,
}

/// How `distsync status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusFormat {
    /// Aligned columns under a header: KIND NAME ROLE SESSION TOKEN AGE KEY DETAIL.
    Text,
    /// One JSON object (the fields of the library's `StatusReport`).
    Json,
}

/// What `distsync break --help` adds after the options.
const BREAK_AFTER_HELP: &str = "\
The break is safe: the holder's renewals fail, so it sees its hold lost within its \
session's deadline (a `distsync lock -- CMD` holder stops CMD), its guarded writes are \
refused, and the next holder's fencing token is higher. `held_for` and `since` are `-` \
where the store does not record when a hold was taken. Exit codes: 0 broken, 1 nobody \
holds NAME (`not held NAME` on standard error), 2 a backend that cannot end another \
process's hold, 4 a store error. On ZooKeeper the break ends the hold alone (only a \
session's owner can end it there): the holder's session and other holds go on.";

/// `distsync break`.
#[derive(Debug, Args)]
pub(crate) struct BreakArgs {
    /// The lock's name.
    pub name: String,
}

/// `distsync revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The lock's name.
    pub name: String,
}

/// `distsync status`.
#[derive(Debug, Args)]
#[command(after_help = "\
Text rows: one per holder (ROLE `holder`, `leader` for an election), waiter (`waiter-1`, \
`waiter-2`, ... in the order they will be served), queue (DETAIL `ready=N in_flight=N`), \
held barrier and double barrier; `-` where the store does not record a field (Redis \
records no ages). PREFIX is a plain prefix of names (`jobs/` covers `jobs/a`). The view \
is for people and monitoring, not for deciding who may write: use fencing tokens.")]
pub(crate) struct StatusArgs {
    /// Only names starting with this (default: every name).
    pub prefix: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

/// `distsync console`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints `console on http://ADDR/ (BACKEND, read-only|actions on)` on standard error once it \
listens. The page needs no reload; /api/board is its data as JSON, /metrics the metrics. \
Actions need the token: the page asks for it, and sends it as `Authorization: Bearer`; \
without --actions-token-file every action gets 403. On memory:// the console sees only \
its own process's store (empty): use it with a shared store. Exit codes: 0 interrupted \
(SIGINT, SIGTERM), 2 a bad address or token file, 4 the store could not be reached.")]
pub(crate) struct ConsoleArgs {
    /// Only names starting with this (default: every name).
    pub prefix: Option<String>,
    /// The address to listen on (loopback by default: put a proxy with TLS in front to
    /// reach it from elsewhere).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Turn the actions on for requests that carry the token in FILE (its first line, at
    /// least 16 characters). Keep the file readable by the operator only.
    #[arg(long, value_name = "FILE")]
    pub actions_token_file: Option<std::path::PathBuf>,
    /// Read the store at most once per DURATION (`500ms`, `2s`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration::positive)]
    pub refresh: Duration,
}

/// `distsync migrate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints `queues=N items=N stm_keys=N barriers=N counters=N latches=N active_holds=N \
dry_run=BOOL`, then `verified` once the destination was read back and holds every copied \
item, key, barrier, counter and latch (or `dry run: nothing written`). Exit codes: 0 \
done, 4 refused because the source has live holds (the message names how many and one \
key), a counter or latch in the destination cannot take the source's, or the copy or \
its verification failed, 2 a bad URL or a backend that cannot export. Stop the source's \
clients first: see docs/MIGRATING.md.")]
pub(crate) struct MigrateArgs {
    /// The store to copy from (left as it is).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The store to copy into (queues are appended to, keys overwritten).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Read both stores and print what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Copy even while the source has live holds (locks, leadership, double-barrier
    /// entries), which are never copied.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_default_ttl_is_the_librarys() {
        let cli = Cli::try_parse_from(["distsync", "lock", "a"]).unwrap();
        assert_eq!(cli.ttl, distsync::session::DEFAULT_TTL);
    }

    #[test]
    fn lock_takes_the_command_after_the_separator() {
        let cli = Cli::try_parse_from([
            "distsync", "lock", "a", "--ttl", "5s", "--", "sh", "-c", "x",
        ])
        .unwrap();
        assert_eq!(cli.ttl, Duration::from_secs(5));
        assert_eq!(cli.grace, Duration::from_secs(5));
        match cli.command {
            Command::Lock(args) => {
                assert_eq!(args.name, "a");
                assert_eq!(args.command, ["sh", "-c", "x"]);
                assert_eq!(args.wait.timeout, None);
                assert!(!args.wait.no_wait);
                assert_eq!(args.lock_delay, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lock_takes_a_lock_delay_and_refuses_a_bad_one() {
        let cli = Cli::try_parse_from(["distsync", "lock", "a", "--lock-delay", "5s", "--", "x"])
            .unwrap();
        match cli.command {
            Command::Lock(args) => assert_eq!(args.lock_delay, Some(Duration::from_secs(5))),
            other => panic!("{other:?}"),
        }
        for bad in ["0s", "-1s", "5 s", "2d"] {
            let refused = Cli::try_parse_from(["distsync", "lock", "a", "--lock-delay", bad]);
            assert!(refused.is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_units_and_refuse_bare_numbers() {
        let cli = Cli::try_parse_from([
            "distsync",
            "--ttl",
            "1500ms",
            "--grace",
            "500ms",
            "lock",
            "a",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(cli.ttl, Duration::from_millis(1500));
        assert_eq!(cli.grace, Duration::from_millis(500));
        match cli.command {
            Command::Lock(args) => assert_eq!(args.wait.timeout, Some(Duration::from_millis(250))),
            other => panic!("{other:?}"),
        }
        for bad in [
            &["distsync", "lock", "a", "--timeout", "0"][..],
            &["distsync", "lock", "a", "--timeout", "25h"],
            &["distsync", "lock", "a", "--timeout", "1s", "--no-wait"],
            &["distsync", "--ttl", "0", "lock", "a"],
            &["distsync", "--ttl", "30", "lock", "a"],
            &["distsync", "lock", "a", "--timeout", "250"],
            &["distsync", "--grace", "0.5", "lock", "a"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queue_items_take_a_format() {
        let cli = Cli::try_parse_from(["distsync", "queue", "q", "push", "-0"]).unwrap();
        match cli.command {
            Command::Queue(QueueArgs {
                action: QueueAction::Push { item, format, .. },
                ..
            }) => {
                assert_eq!(item, None, "items from standard input");
                assert_eq!(format.encoding(), Encoding::Null);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "distsync",
            "queue",
            "q",
            "receive",
            "--timeout",
            "2s",
            "--",
            "sh",
            "-c",
            "cat",
        ])
        .unwrap();
        match cli.command {
            Command::Queue(QueueArgs {
                action:
                    QueueAction::Receive {
                        wait,
                        command,
                        format,
                    },
                ..
            }) => {
                assert_eq!(wait.timeout, Some(Duration::from_secs(2)));
                assert_eq!(command, ["sh", "-c", "cat"]);
                assert_eq!(format.encoding(), Encoding::Text);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["distsync", "queue", "q", "pop", "-0", "--format", "json"])
                .is_err()
        );
    }

    #[test]
    fn elect_needs_a_value_unless_listening() {
        assert!(Cli::try_parse_from(["distsync", "elect", "e"]).is_err());
        assert!(Cli::try_parse_from(["distsync", "elect", "--listen", "e"]).is_ok());
        assert!(Cli::try_parse_from(["distsync", "elect", "--listen", "e", "v"]).is_err());
    }

    #[test]
    fn elect_takes_once_and_the_command_after_the_separator() {
        let cli =
            Cli::try_parse_from(["distsync", "elect", "e", "v", "--", "sh", "-c", "x"]).unwrap();
        match cli.command {
            Command::Elect(args) => {
                assert_eq!(
                    (args.name.as_str(), args.value.as_deref()),
                    ("e", Some("v"))
                );
                assert_eq!(args.command, ["sh", "-c", "x"]);
                assert!(!args.once && !args.listen);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["distsync", "elect", "--once", "e", "v"]).unwrap();
        match cli.command {
            Command::Elect(args) => assert!(args.once && args.command.is_empty()),
            other => panic!("{other:?}"),
        }
        for bad in [
            &["distsync", "elect", "--listen", "--once", "e"][..],
            &["distsync", "elect", "--listen", "e", "--", "true"],
            &["distsync", "elect", "e", "--", "true"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn migrate_takes_two_urls_and_needs_no_backend() {
        let cli = Cli::try_parse_from([
            "distsync",
            "migrate",
            "--from",
            "etcd://a:1",
            "--to",
            "memory://",
            "--dry-run",
        ])
        .unwrap();
        assert!(!cli.command.needs_backend());
        match cli.command {
            Command::Migrate(args) => {
                assert_eq!(
                    (args.from.as_str(), args.to.as_str()),
                    ("etcd://a:1", "memory://")
                );
                assert!(args.dry_run && !args.force);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["distsync", "migrate", "--from", "memory://"]).is_err());
    }

    #[test]
    fn queue_actions_follow_the_name() {
        let cli = Cli::try_parse_from(["distsync", "queue", "q", "push", "x", "--priority", "3"])
            .unwrap();
        match cli.command {
            Command::Queue(QueueArgs {
                name,
                action: QueueAction::Push { item, priority, .. },
            }) => assert_eq!(
                (name.as_str(), item, priority),
                ("q", Some(OsString::from("x")), 3)
            ),
            other => panic!("{other:?}"),
        }
    }
}
