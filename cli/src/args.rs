//! The command line's grammar (clap).

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

const LONG_ABOUT: &str = "\
Distributed locks, leader elections, read-write locks, queues, barriers and STM from \
the shell, over etcd, Redis, PostgreSQL or an in-process memory store.

Results are lines on standard output, stable and meant to be parsed; errors go to \
standard error, and so do logs (filter them with RUST_LOG, default `warn,sqlx=error`).";

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the operation failed (store or connection error, `queue pop --no-wait` on an
       empty queue, STM bank sum changed under a level that promises it)
  2    usage or configuration error: bad arguments, no backend given, bad URL, backend
       not compiled in, invalid name, primitive not supported by the backend
  3    the session was lost while something was held or awaited
  130  interrupted by SIGINT (Ctrl-C) or SIGTERM, after releasing what was held
  lock/rwlock with `-- CMD`: CMD's exit code (128+N if signal N killed it; 126 if CMD
  could not be run, 127 if not found). CMD is stopped before the store can give the
  hold to anyone else: once renewals of the session fail, CMD gets SIGTERM --grace
  seconds before the session's client-side deadline (at once if less remains), and
  SIGKILL at that deadline if it is still running; when the session is lost, SIGTERM at
  once and SIGKILL at the deadline at the latest. distsync then exits with 3.

Backends (URL in --backend or DISTSYNC_URL):
  memory://                                   in-process (one process only)
  etcd://host:port[,host:port...][/namespace] needs the `etcd` feature
  redis://host:port[/db][?namespace=...]      needs the `redis` feature
  postgres://user@host:port/db[?schema=...]   needs the `postgres` feature
  Install with every backend: cargo install --path cli --features full";

/// `distsync`: distributed concurrency primitives from the shell.
#[derive(Debug, Parser)]
#[command(
    name = "distsync",
    version,
    about = "Distributed locks, elections, queues, barriers and STM over etcd, Redis, PostgreSQL or memory",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES,
    after_help = "Exit codes: 0 ok, 1 operation error, 2 usage/config error, 3 session lost, 130 interrupted (see --help)"
)]
pub(crate) struct Cli {
    /// The store's URL: memory://, etcd://…, redis://…, postgres://…
    #[arg(long, env = "DISTSYNC_URL", global = true, value_name = "URL")]
    pub backend: Option<String>,

    /// Read the store's URL from this file (its first line), so that a URL with a
    /// password never appears on a command line or in the process list. Also
    /// DISTSYNC_URL_FILE. Overrides --backend.
    #[arg(long, env = "DISTSYNC_URL_FILE", global = true, value_name = "PATH")]
    pub backend_file: Option<std::path::PathBuf>,

    /// Session TTL in seconds, for what is held through a session (locks, candidacies,
    /// double-barrier entries): a crashed distsync releases them after this long.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl: u64,

    /// Seconds CMD (of `lock`/`rwlock -- CMD`) gets between SIGTERM and SIGKILL when
    /// the session's renewals fail: SIGTERM comes this long before the session's
    /// client-side deadline (at once if less remains), SIGKILL at the deadline.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5.0,
          value_parser = parse_grace)]
    pub grace: f64,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--grace`: a finite, non-negative number of seconds.
fn parse_grace(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "`{text}` is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Acquire a lock, print `NAME key=<key> token=<token>`, and hold it while CMD runs
    /// (or until interrupted, without CMD).
    Lock(LockArgs),
    /// Campaign and hold leadership until interrupted, or (--listen) print every leader
    /// change.
    Elect(ElectArgs),
    /// Acquire a read or write lock and hold it while CMD runs (or until interrupted).
    Rwlock(RwLockArgs),
    /// Acquire one of N permits of a counting semaphore, print `NAME key=<key>
    /// token=<token>`, and hold it while CMD runs (or until interrupted).
    Semaphore(SemaphoreArgs),
    /// Push to, pop from or count a durable (priority) queue.
    Queue(QueueArgs),
    /// Hold, release or wait on a barrier.
    Barrier(BarrierArgs),
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
            Command::DoubleBarrier(args) => vec![args.name.clone()],
            Command::StmBank(args) => vec![format!("{}/0", args.prefix)],
            Command::Interactive(args) => vec![args.name.clone()],
            Command::Migrate(_) | Command::Status(_) => Vec::new(),
        }
    }

    /// Whether the command works on the store of `--backend` (all but `migrate`, which
    /// names its two stores itself).
    pub(crate) fn needs_backend(&self) -> bool {
        !matches!(self, Command::Migrate(_))
    }
}

/// `distsync lock`.
#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The lock's name.
    pub name: String,
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
    /// The command to run while holding a permit, after `--`. It gets
    /// DISTSYNC_LOCK_KEY and DISTSYNC_FENCING_TOKEN in its environment.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `distsync elect`.
#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    /// Print every leader change (`<value> term=<term>` per line) instead of
    /// campaigning.
    #[arg(long, conflicts_with = "value")]
    pub listen: bool,
    /// The election's name.
    pub name: String,
    /// The value to campaign with (required unless --listen).
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
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

/// What to do with a queue.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueAction {
    /// Append ITEM (prints nothing).
    Push {
        /// The item.
        item: String,
        /// Lower numbers come out first; FIFO within a priority.
        #[arg(long, default_value_t = 0)]
        priority: u16,
    },
    /// Remove the first item and print it, waiting for one if the queue is empty.
    Pop {
        /// Do not wait: exit with 1 (and print nothing) if the queue is empty.
        #[arg(long)]
        no_wait: bool,
    },
    /// Receive the first item (at least once), print it, and acknowledge it once it is
    /// written out; if the process dies first or the output fails, the item goes back
    /// to the queue, at its place.
    Receive {
        /// Do not wait: exit with 1 (and print nothing) if the queue is empty.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print how many items are queued.
    Len,
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

impl From<IsolationArg> for distsync::Isolation {
    fn from(level: IsolationArg) -> Self {
        match level {
            IsolationArg::SerializableSnapshot => distsync::Isolation::SerializableSnapshot,
            IsolationArg::Serializable => distsync::Isolation::Serializable,
            IsolationArg::RepeatableReads => distsync::Isolation::RepeatableReads,
            IsolationArg::ReadCommitted => distsync::Isolation::ReadCommitted,
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

/// `distsync migrate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints `queues=N items=N stm_keys=N barriers=N active_holds=N dry_run=BOOL`, then \
`verified` once the destination was read back and holds every copied item, key and \
barrier (or `dry run: nothing written`). Exit codes: 0 done, 1 refused because the \
source has live holds (the message names how many and one key) or the copy or its \
verification failed, 2 a bad URL or a backend that cannot export. Stop the source's \
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
    fn lock_takes_the_command_after_the_separator() {
        let cli =
            Cli::try_parse_from(["distsync", "lock", "a", "--ttl", "5", "--", "sh", "-c", "x"])
                .unwrap();
        assert_eq!(cli.ttl, 5);
        match cli.command {
            Command::Lock(args) => {
                assert_eq!(args.name, "a");
                assert_eq!(args.command, ["sh", "-c", "x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn elect_needs_a_value_unless_listening() {
        assert!(Cli::try_parse_from(["distsync", "elect", "e"]).is_err());
        assert!(Cli::try_parse_from(["distsync", "elect", "--listen", "e"]).is_ok());
        assert!(Cli::try_parse_from(["distsync", "elect", "--listen", "e", "v"]).is_err());
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
                action: QueueAction::Push { item, priority },
            }) => assert_eq!((name.as_str(), item.as_str(), priority), ("q", "x", 3)),
            other => panic!("{other:?}"),
        }
    }
}
