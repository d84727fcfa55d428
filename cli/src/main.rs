//! # `distsync`, the command line
//!
//! Locks, leader elections, read-write locks, queues, barriers and the STM bank demo
//! of [distsync](https://example.invalid/distsync) from a shell, over any backend:
//!
//! ```text
//! distsync --backend etcd://127.0.0.1:2379 lock jobs/nightly -- ./run-nightly.sh
//! export DISTSYNC_URL=redis://127.0.0.1:6379
//! distsync elect service/leader node-1          # campaigns, holds until Ctrl-C
//! distsync elect scheduler node-1 -- ./scheduler # runs it while leader, wherever that is
//! distsync elect --listen service/leader         # prints every leader change
//! distsync rwlock config write -- ./rewrite-config.sh
//! distsync queue jobs push build-42 --priority 1
//! distsync queue jobs pop --timeout 30s --format json
//! distsync queue jobs receive -- ./build.sh      # acked when build.sh exits 0
//! distsync barrier deploy hold | release | wait
//! distsync double-barrier batch 3
//! distsync stm-bank --isolation serializable
//! distsync migrate --from etcd://127.0.0.1:2379 --to postgres://app@db/app --dry-run
//! distsync interactive election demo             # the Go demo programs' stdin commands
//! ```
//!
//! The backend comes from `--backend URL` or the environment variable `DISTSYNC_URL`
//! (`memory://`, `etcd://…`, `redis://…`, `rediss://…`, `redis+sentinel://…`,
//! `redis+cluster://…`, `postgres://…`, `zk://…`, `zks://…`, `mysql://…`, `nats://…`). The
//! crate builds with no backend but `memory://` by default; install it with every backend
//! with `cargo install --path cli --features full` (or pick `etcd`, `redis`, `postgres`,
//! `zookeeper`, `mysql`, `nats`).
//!
//! ## Output
//!
//! Results are lines on standard output, stable and meant to be parsed (`NAME
//! key=<key> token=<token>` once a lock is held, `leader NAME value=<v> term=<t>` once
//! elected, …); errors are one line on standard error, and logs go to standard error
//! through `tracing` (filter with `RUST_LOG`, default `warn,sqlx=error`). See `cli/README.md` for
//! every command's lines.
//!
//! ## Exit codes
//!
//! 0 success, 1 nothing to take now or in time (`--no-wait`, `--timeout`, an empty
//! queue), 2 bad arguments or configuration, 3 session lost, 4 store or operation
//! failed, 130 interrupted, and CMD's own code with `-- CMD`: the table is in
//! `cli/README.md` and in `distsync --help`.
//!
//! ## Holding while a command runs
//!
//! `distsync lock NAME -- CMD ARGS…` acquires, prints the lock line, runs CMD with
//! `DISTSYNC_LOCK_KEY` and `DISTSYNC_FENCING_TOKEN` in its environment, releases when
//! CMD exits and exits with CMD's code. If the session is lost while CMD runs, the lock
//! is no longer exclusive: distsync sends SIGTERM to CMD (SIGKILL at the session's
//! client-side deadline at the latest) and exits with 3, whatever CMD's code.
//! `distsync queue NAME receive -- CMD` runs CMD the same way with the received item as
//! its standard input, acknowledging the item when CMD exits 0. SIGINT and SIGTERM received
//! by distsync are forwarded to CMD; distsync waits for CMD (a second signal kills it),
//! releases, and exits with 130.
//!
//! `distsync elect NAME VALUE -- CMD ARGS…` runs CMD the same way while leader (with
//! `DISTSYNC_FENCING_TOKEN` set to the term), but a loss does not end it: once CMD has
//! been stopped, distsync campaigns again on a fresh session and runs CMD again on the
//! next win (`--once` exits with 3 instead). CMD's own exit ends it with CMD's code.
#![warn(missing_docs)]
// Signals go to CMD's group through rustix's safe `kill_process_group`, and the
// watchdog's signal mask through nix's safe `sigprocmask`.
#![forbid(unsafe_code)]

mod args;
mod child;
mod commands;
mod context;
mod duration;
mod exit;
mod generate;
mod hold;
mod items;
mod output;
mod repl;
mod signals;
mod stdin;
#[cfg(unix)]
mod terminal;
mod wait;
#[cfg(unix)]
mod watchdog;

use std::process::ExitCode;
use std::time::Duration;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    #[cfg(unix)]
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(watchdog::ARG)) {
        return watchdog::main();
    }
    let cli = args::parse();
    init_tracing();
    let generated = match cli.command {
        Command::Completions { shell } => Some(generate::completions(shell)),
        Command::Man => Some(generate::man()),
        _ => None,
    };
    if let Some(written) = generated {
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            // `distsync man | head`: the reader has what it wanted.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(error) => {
                report(&Failure::failed(format!(
                    "writing to standard output: {error}"
                )));
                ExitCode::from(exit::FAILED)
            }
        };
    }
    let backend = match &cli.backend_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text.lines().next().map(|line| line.trim().to_owned()),
            Err(error) => {
                report(&Failure::usage(format!(
                    "cannot read the URL from {}: {error}",
                    path.display()
                )));
                return ExitCode::from(exit::USAGE);
            }
        },
        None => cli.backend.clone(),
    }
    .filter(|url| !url.trim().is_empty());
    let code = if backend.is_none() && cli.command.needs_backend() {
        report(&Failure::usage(
            "no backend: pass --backend URL or set the environment variable DISTSYNC_URL \
             (e.g. memory://, etcd://127.0.0.1:2379, redis://127.0.0.1:6379, \
             postgres://user@127.0.0.1:5432/db, zk://127.0.0.1:2181, \
             mysql://user@127.0.0.1:3306/db, nats://127.0.0.1:4222)",
        ));
        exit::USAGE
    } else {
        run(cli, backend)
    };
    ExitCode::from(code)
}

/// Runs the command; `url` is the `--backend` store (given unless the command needs none).
fn run(cli: Cli, url: Option<String>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&Failure::failed(format!(
                "cannot start the async runtime: {error}"
            )));
            return exit::FAILED;
        }
    };
    let code = match runtime.block_on(commands::run(cli, url)) {
        Ok(code) => code,
        Err(failure) => {
            report(&failure);
            failure.code
        }
    };
    // Nothing should still be running; do not let a stray task hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn report(failure: &Failure) {
    // An interrupt is no error to report: the exit code (130) says it.
    if !failure.message.is_empty() {
        eprintln!("distsync: error: {}", failure.message);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    // A second subscriber cannot be installed; there is none before this one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
