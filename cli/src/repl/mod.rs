//! `distsync interactive KIND NAME`: commands read line by line from standard input, as
//! the Go demo programs of etcd's concurrency primitives do, with one result line each
//! on standard output.
//!
//! As in those programs, `elect` and `watch` run in the background (their lines appear
//! when they happen) while every other command finishes before the next line is read.
//! End of input, `quit` or `exit` ends the session, releasing what is held (exit code
//! 0); SIGINT or SIGTERM does the same with exit code 130; a lost session ends it with
//! exit code 3.

mod election;
mod hold;
mod queue;

use std::future::Future;
use std::time::Duration;

use distsync::{Name, Session};

use crate::args::{InteractiveArgs, ReplKind};
use crate::context::{close, Ctx};
use crate::exit::{self, Failure};
use crate::output::say;
use crate::signals::Interrupts;
use crate::stdin::Lines;
use crate::wait::{race, Raced};

/// How long releasing what is held may take when the session ends.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the interactive session of `args.kind`.
///
/// # Errors
/// Exit code 3 when the session is lost; else see the crate docs.
pub(crate) async fn run(ctx: &mut Ctx, args: InteractiveArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let id = args.id.unwrap_or_else(|| u64::from(std::process::id()));
    let mut lines = Lines::spawn();
    // Each kind but the queue holds through a session, closed whatever the loop ends
    // with, so that everything held is released before the process exits.
    match args.kind {
        ReplKind::Queue => queue::run(ctx, &mut lines, name).await,
        ReplKind::Election => {
            let session = ctx.session().await?;
            let outcome = election::run(ctx, &session, &mut lines, name, id).await;
            close(&session).await;
            outcome
        }
        ReplKind::Lock => {
            let session = ctx.session().await?;
            let outcome = hold::run_lock(ctx, &session, &mut lines, name).await;
            close(&session).await;
            outcome
        }
        ReplKind::Rwlock => {
            let session = ctx.session().await?;
            let outcome = hold::run_rwlock(ctx, &session, &mut lines, name).await;
            close(&session).await;
            outcome
        }
    }
}

/// What happened next.
pub(crate) enum Input {
    /// A command line (trimmed, not empty).
    Line(String),
    /// `quit`, `exit` or the end of standard input.
    End,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The session was lost.
    Lost,
}

impl Input {
    /// The exit that ends the loop on this input, or `None` for a line to handle.
    pub(crate) fn exit(&self) -> Option<Result<u8, Failure>> {
        match self {
            Input::Line(_) => None,
            Input::End => Some(Ok(exit::OK)),
            Input::Interrupted => Some(Ok(exit::INTERRUPTED)),
            Input::Lost => Some(Err(Failure::session_lost("during the interactive session"))),
        }
    }
}

/// Waits for the next non-empty line, an interrupt, or the loss of `session`.
/// Cancel-safe.
pub(crate) async fn next_input(
    lines: &mut Lines,
    interrupts: &mut Interrupts,
    session: Option<&Session>,
) -> Input {
    loop {
        return match race(lines.next(), interrupts, session).await {
            Raced::Done(Some(line)) => match line.trim() {
                "" => continue,
                "quit" | "exit" => Input::End,
                line => Input::Line(line.to_owned()),
            },
            Raced::Done(None) => Input::End,
            Raced::Interrupted => Input::Interrupted,
            Raced::Lost => Input::Lost,
        };
    }
}

/// Splits a command line into its command word and the rest (trimmed).
pub(crate) fn split(line: &str) -> (&str, &str) {
    match line.split_once(char::is_whitespace) {
        Some((command, rest)) => (command, rest.trim()),
        None => (line, ""),
    }
}

/// Runs a blocking command (`lock`, `r`, `w`, `pop`, ...) until it finishes, an
/// interrupt arrives or the session is lost; the latter two end the loop with the exit
/// that [`Input::exit`] gives them.
pub(crate) async fn blocking<T>(
    op: impl Future<Output = T>,
    interrupts: &mut Interrupts,
    session: Option<&Session>,
) -> Result<T, Input> {
    match race(op, interrupts, session).await {
        Raced::Done(output) => Ok(output),
        Raced::Interrupted => Err(Input::Interrupted),
        Raced::Lost => Err(Input::Lost),
    }
}

/// Prints an operation's error as a result line. A lost session ends the loop.
pub(crate) fn report(what: &str, error: distsync::Error) -> Result<(), Input> {
    match error {
        distsync::Error::SessionLost => Err(Input::Lost),
        error => {
            say!("error: {what}: {error}");
            Ok(())
        }
    }
}

/// Prints the result line of an unknown command, as the Go demos do.
pub(crate) fn unknown(line: &str) {
    say!("unknown action: {line}");
}

/// Releases with `release`, waiting at most [`RELEASE_TIMEOUT`]; the session's close
/// that follows releases it anyway.
pub(crate) async fn release_quietly(
    what: &str,
    release: impl Future<Output = distsync::Result<()>>,
) {
    match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, what, "release failed; closing the session frees it")
        }
        Err(_) => tracing::debug!(what, "release timed out; closing the session frees it"),
    }
}
