//! Running CMD while something is held, as `etcdctl lock NAME CMD` does (or while a
//! received queue item is, with the item as CMD's input).

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use distsync::session::{HealthWatch, Lost, SessionHealth};
use distsync::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit::{self, Failure};
use crate::signals::{Interrupt, Interrupts};

/// How long CMD has to exit after SIGTERM once the hold is lost, before SIGKILL, when
/// no client-side deadline is known (the session was lost before any renewal failed).
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(10);

/// When CMD must be stopped: the hold's `lost()`, the session's health (renewals
/// failing: the early warning, with the client-side deadline), and the grace CMD gets
/// between SIGTERM and SIGKILL.
pub(crate) struct Stop {
    /// The hold's `lost()`.
    pub lost: Lost,
    /// The session's health.
    pub health: HealthWatch,
    /// SIGTERM comes this long before the deadline once renewals fail.
    pub grace: Duration,
    /// Resolves when someone asked for the hold back (`lock --revocable`): CMD gets
    /// SIGTERM, and no SIGKILL, since the hold is still valid while it winds down.
    pub requested: Option<futures::future::BoxFuture<'static, ()>>,
}

/// How CMD's run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChildEnd {
    /// CMD exited by itself with this code (128+N if signal N killed it).
    Exited(u8),
    /// distsync was interrupted; the signal was forwarded and CMD has exited.
    Interrupted,
    /// The hold was lost while CMD ran; CMD was terminated and has exited.
    Lost,
}

/// Runs `command` (program and arguments) with `env` added to its environment, and
/// waits for it to exit. Standard output and error are inherited; so is standard input,
/// unless `input` is given: CMD then reads exactly those bytes, then end of input (a CMD
/// that exits without reading them all is no error).
///
/// CMD must not go on believing it is protected once the store may give the hold to
/// someone else:
/// - when the session's renewals fail, CMD gets SIGTERM `grace` before the session's
///   client-side deadline (at once if less remains), and SIGKILL at the deadline if it
///   is still running (renewals that recover before the SIGTERM cancel both);
/// - when the hold is lost, CMD gets SIGTERM at once (if it has not had it), and
///   SIGKILL at the last known deadline, or [`KILL_GRACE`] later if that has passed.
///
/// When SIGINT or SIGTERM arrives, it is forwarded to CMD; a second one kills CMD.
///
/// Returns once CMD has exited, in every case.
///
/// # Errors
/// Exit code 127 when the program is not found, 126 when it cannot be run, 4 when
/// waiting for it fails.
pub(crate) async fn run(
    command: &[OsString],
    env: &[(&str, String)],
    input: Option<Bytes>,
    stop: Stop,
    interrupts: &mut Interrupts,
) -> Result<ChildEnd, Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure::usage("no command given after `--`"));
    };
    let mut spawning = Command::new(program);
    spawning
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)));
    if input.is_some() {
        spawning.stdin(Stdio::piped());
    }
    let mut child = spawning.spawn().map_err(|error| Failure {
        code: if error.kind() == std::io::ErrorKind::NotFound {
            exit::NOT_FOUND
        } else {
            exit::CANNOT_EXECUTE
        },
        message: format!("cannot run {}: {error}", program.to_string_lossy()),
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A task of its own, so that a CMD that reads slowly (or not at all) never
        // holds up the watch below; dropping `stdin` at its end is CMD's end of input.
        tokio::spawn(async move {
            if let Err(error) = stdin.write_all(&input).await {
                tracing::debug!(%error, "the command did not read all of its input");
            }
        });
    }
    let Stop {
        mut lost,
        mut health,
        grace,
        requested,
    } = stop;
    let mut requested = requested.unwrap_or_else(|| Box::pin(std::future::pending()));
    let mut requested_seen = false;
    // The last known client-side deadline.
    let mut deadline = health.current().valid_until().map(Instant::from_std);
    let mut lost_seen = false;
    let mut stopping = false;
    let mut interrupted = false;
    let mut term_at: Option<Instant> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        let kill_timer = sleep_until(kill_at);
        let term_timer = sleep_until(term_at);
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|error| {
                    Failure::failed(format!("waiting for {} failed: {error}", program.to_string_lossy()))
                })?;
                return Ok(if lost_seen || stopping {
                    ChildEnd::Lost
                } else if interrupted {
                    ChildEnd::Interrupted
                } else {
                    ChildEnd::Exited(code_of(status))
                });
            }
            () = &mut lost, if !lost_seen => {
                lost_seen = true;
                let now = Instant::now();
                let kill = deadline.filter(|&at| at > now).unwrap_or(now + KILL_GRACE);
                kill_at = Some(kill_at.map_or(kill, |at| at.min(kill)));
                term_at = None;
                if !stopping {
                    stopping = true;
                    tracing::warn!(
                        kill_in = ?kill.saturating_duration_since(now),
                        "the hold was lost while the command runs: sending it SIGTERM"
                    );
                    terminate(&mut child, Interrupt::Terminate);
                }
            }
            now = health.changed(), if !lost_seen => match now {
                SessionHealth::Failing { valid_until, .. } if !stopping => {
                    let valid_until = Instant::from_std(valid_until);
                    deadline = Some(valid_until);
                    term_at = Some(valid_until.checked_sub(grace).unwrap_or(valid_until).max(Instant::now()));
                    kill_at = Some(valid_until);
                    tracing::warn!(
                        remaining = ?valid_until.saturating_duration_since(Instant::now()),
                        "session renewals are failing: the command will be stopped before the deadline"
                    );
                }
                SessionHealth::Healthy { valid_until } if !stopping => {
                    deadline = Some(Instant::from_std(valid_until));
                    term_at = None;
                    kill_at = None;
                }
                _ => {}
            },
            () = term_timer => {
                stopping = true;
                term_at = None;
                tracing::warn!(
                    kill_in = ?kill_at.map(|at| at.saturating_duration_since(Instant::now())),
                    "session renewals are failing: sending the command SIGTERM before the deadline"
                );
                terminate(&mut child, Interrupt::Terminate);
            }
            () = &mut requested, if !requested_seen => {
                requested_seen = true;
                if !stopping && !interrupted {
                    tracing::warn!("release requested: sending the command SIGTERM");
                    terminate(&mut child, Interrupt::Terminate);
                }
            }
            signal = interrupts.recv() => {
                if interrupted || lost_seen || stopping {
                    tracing::warn!("second signal: killing the command");
                    kill(&mut child);
                } else {
                    interrupted = true;
                    terminate(&mut child, signal);
                }
            }
            () = kill_timer => {
                tracing::warn!("the command outlived its grace period: killing it");
                kill(&mut child);
                kill_at = None;
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The shell's view of an exit status: the code, or 128+N for a signal N.
fn code_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return (code & 0xff) as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return (128 + (signal & 0x7f)) as u8;
        }
    }
    exit::FAILED
}

/// Sends `signal` to the child (SIGKILL where signals are not available).
fn terminate(child: &mut Child, signal: Interrupt) {
    #[cfg(unix)]
    {
        use rustix::process::{kill_process, Pid, Signal};
        // `pid` is our own child, not yet reaped (tokio reaps it only in `wait`), so it
        // cannot have been reused.
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        if let (Some(pid), Some(signal)) = (pid, Signal::from_named_raw(signal.number())) {
            if let Err(error) = kill_process(pid, signal) {
                tracing::debug!(%error, "signalling the command failed");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signal;
        kill(child);
    }
}

fn kill(child: &mut Child) {
    if let Err(error) = child.start_kill() {
        tracing::debug!(%error, "killing the command failed");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn signals_map_to_128_plus_n() {
        assert_eq!(code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(code_of(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
