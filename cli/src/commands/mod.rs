//! The subcommands: connecting to the store and dispatching to the one the command line names.

mod barrier;
mod break_lock;
mod console;
mod counter;
mod double_barrier;
mod elect;
mod group;
mod latch;
mod lock;
mod migrate;
mod queue;
mod ratelimit;
mod revoke;
mod rwlock;
mod schedule;
mod semaphore;
mod shards;
mod status;
mod stm_bank;

use crate::args::{Cli, Command};
use crate::context::Ctx;
use crate::exit::Failure;
use crate::repl;
use crate::signals::Interrupts;
use crate::wait::{race, Raced};

/// Connects to `url` (the `--backend` store) and runs the command; `migrate` connects to
/// the stores it names instead.
///
/// # Errors
/// The command's failure, with its exit code.
pub(crate) async fn run(cli: Cli, url: Option<String>) -> Result<u8, Failure> {
    // Names first: an invalid one is a usage error whether or not the store answers.
    for name in cli.command.names() {
        distsync::Name::new(name)?;
    }
    let mut interrupts = Interrupts::install()
        .map_err(|error| Failure::failed(format!("cannot install signal handlers: {error}")))?;
    let cli = match cli.command {
        Command::Migrate(args) => return migrate::run(args, &mut interrupts).await,
        _ => cli,
    };
    let url = url.ok_or_else(|| Failure::usage("no backend: pass --backend URL"))?;
    let coordinator = match race(distsync::connect(&url), &mut interrupts, None).await {
        Raced::Done(coordinator) => coordinator?,
        Raced::Interrupted | Raced::Lost => return Err(Failure::interrupted()),
    };
    tracing::debug!(backend = coordinator.capabilities().backend, "connected");
    let mut ctx = Ctx {
        coordinator,
        interrupts,
        ttl: cli.ttl,
        grace: cli.grace,
    };
    match cli.command {
        Command::Lock(args) => lock::run(&mut ctx, args).await,
        Command::Elect(args) => elect::run(&mut ctx, args).await,
        Command::Rwlock(args) => rwlock::run(&mut ctx, args).await,
        Command::Semaphore(args) => semaphore::run(&mut ctx, args).await,
        Command::Queue(args) => queue::run(&mut ctx, args).await,
        Command::Barrier(args) => barrier::run(&mut ctx, args).await,
        Command::Counter(args) => counter::run(&mut ctx, args).await,
        Command::Latch(args) => latch::run(&mut ctx, args).await,
        Command::Ratelimit(args) => ratelimit::run(&mut ctx, args).await,
        Command::Schedule(args) => schedule::run(&mut ctx, args).await,
        Command::DoubleBarrier(args) => double_barrier::run(&mut ctx, args).await,
        Command::StmBank(args) => stm_bank::run(&mut ctx, args).await,
        Command::Interactive(args) => repl::run(&mut ctx, args).await,
        Command::Migrate(args) => migrate::run(args, &mut ctx.interrupts).await,
        Command::Status(args) => status::run(&mut ctx, args).await,
        Command::Break(args) => break_lock::run(&mut ctx, args).await,
        Command::Console(args) => console::run(&mut ctx, args).await,
        Command::Revoke(args) => revoke::run(&mut ctx, args).await,
        Command::Group(args) => group::run(&mut ctx, args).await,
        Command::Shards(args) => shards::run(&mut ctx, args).await,
        // `main` prints these before connecting; they never get here.
        Command::Completions { .. } | Command::Man => Err(Failure::usage(
            "completions and man need no backend and are printed before connecting",
        )),
    }
}
