//! Running CMD while something is held, as `etcdctl lock NAME CMD` does (or while a
//! received queue item is, with the item as CMD's input).

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use distsync::session::{HealthWatch, Lost, SessionHealth};
use distsync::Bytes;
#[cfg(unix)]
use rustix::process::Signal;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit::{self, Failure};
use crate::signals::Interrupts;
#[cfg(unix)]
use crate::{terminal, watchdog::Watchdog};

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
/// - when `distsync` itself dies (SIGKILL, a panic, an abort), CMD's watchdog sends
///   SIGTERM at once and SIGKILL at the last known deadline, or at once when none is
///   known or it has passed (see [`crate::watchdog`]).
///
/// Every signal goes to CMD's process group, so what CMD started in the background
/// stops with it. When SIGINT or SIGTERM arrives, it is forwarded to the group; a second
/// one kills it. When standard input is the terminal `distsync` runs in the foreground
/// of, CMD's group has the terminal while CMD runs (see [`crate::terminal`]).
///
/// Returns once CMD has exited and whatever it left running in its group has had
/// SIGKILL, in every case: nothing of CMD runs once the caller releases the hold.
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
    #[cfg(not(unix))]
    {
        let _ = (args, env, input, stop, interrupts);
        return Err(Failure::usage(format!(
            "cannot run {} under a hold here: distsync stops a command when it dies itself \
             through Unix process groups, which this platform lacks, and never starts one \
             it could leave running",
            program.to_string_lossy()
        )));
    }
    #[cfg(unix)]
    {
        let mut watchdog = Watchdog::start().await.map_err(|error| {
            Failure::failed(format!(
                "cannot start the watchdog that stops the command if distsync dies: {error}"
            ))
        })?;
        let mut spawning = Command::new(program);
        spawning
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .process_group(watchdog.group());
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
        let terminal = if input.is_none() {
            terminal::lend(watchdog.group())
        } else {
            None
        };
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A task of its own, so that a CMD that reads slowly (or not at all) never
            // holds up the watch below; dropping `stdin` at its end is CMD's end of input.
            tokio::spawn(async move {
                if let Err(error) = stdin.write_all(&input).await {
                    tracing::debug!(%error, "the command did not read all of its input");
                }
            });
        }
        let end = watch(program, &mut child, &mut watchdog, stop, interrupts).await;
        drop(terminal);
        watchdog.end().await;
        end
    }
}

/// Watches CMD (started in `watchdog`'s group) until it exits, stopping it as
/// [`run`] says.
#[cfg(unix)]
async fn watch(
    program: &OsString,
    child: &mut Child,
    watchdog: &mut Watchdog,
    stop: Stop,
    interrupts: &mut Interrupts,
) -> Result<ChildEnd, Failure> {
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
    watchdog.deadline(deadline);
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
                    watchdog.signal(Signal::TERM);
                }
            }
            now = health.changed(), if !lost_seen => match now {
                SessionHealth::Failing { valid_until, .. } if !stopping => {
                    let valid_until = Instant::from_std(valid_until);
                    deadline = Some(valid_until);
                    watchdog.deadline(deadline);
                    term_at = Some(valid_until.checked_sub(grace).unwrap_or(valid_until).max(Instant::now()));
                    kill_at = Some(valid_until);
                    tracing::warn!(
                        remaining = ?valid_until.saturating_duration_since(Instant::now()),
                        "session renewals are failing: the command will be stopped before the deadline"
                    );
                }
                SessionHealth::Healthy { valid_until } if !stopping => {
                    deadline = Some(Instant::from_std(valid_until));
                    watchdog.deadline(deadline);
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
                watchdog.signal(Signal::TERM);
            }
            () = &mut requested, if !requested_seen => {
                requested_seen = true;
                if !stopping && !interrupted {
                    tracing::warn!("release requested: sending the command SIGTERM");
                    watchdog.signal(Signal::TERM);
                }
            }
            signal = interrupts.recv() => {
                if interrupted || lost_seen || stopping {
                    tracing::warn!("second signal: killing the command");
                    watchdog.kill();
                } else {
                    interrupted = true;
                    watchdog.signal(signal.signal());
                }
            }
            exited = watchdog.exited() => {
                // Nothing would stop CMD if distsync died now: stop it while distsync can.
                tracing::error!(?exited, "the command's watchdog exited: killing the command");
                watchdog.kill();
                let _ = child.wait().await;
                return Err(Failure::failed(format!(
                    "the watchdog of {} exited ({exited:?}); the command was killed",
                    program.to_string_lossy()
                )));
            }
            () = kill_timer => {
                tracing::warn!("the command outlived its grace period: killing it");
                watchdog.kill();
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
