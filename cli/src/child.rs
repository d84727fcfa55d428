//! Running CMD while something is held, as `etcdctl lock NAME CMD` does.

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit::{self, Failure};
use crate::signals::{Interrupt, Interrupts};

/// How long CMD has to exit after SIGTERM once the hold is lost, before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How CMD's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// CMD exited by itself with this code (128+N if signal N killed it).
    Exited(u8),
    /// distsync was interrupted; the signal was forwarded and CMD has exited.
    Interrupted,
    /// The hold was lost while CMD ran; CMD was terminated and has exited.
    Lost,
}

/// Runs `command` (program and arguments) with `env` added to its environment, and
/// waits for it to exit. Standard input, output and error are inherited.
///
/// - When `lost` resolves first, CMD gets SIGTERM, and SIGKILL [`KILL_GRACE`] later if
///   it is still running: it must not go on believing it is protected.
/// - When SIGINT or SIGTERM arrives, it is forwarded to CMD; a second one kills CMD.
///
/// Returns once CMD has exited, in every case.
///
/// # Errors
/// Exit code 127 when the program is not found, 126 when it cannot be run, 1 when
/// waiting for it fails.
pub async fn run(
    command: &[OsString],
    env: &[(&str, String)],
    lost: impl Future<Output = ()>,
    interrupts: &mut Interrupts,
) -> Result<ChildEnd, Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure::usage("no command given after `--`"));
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .spawn()
        .map_err(|error| Failure {
            code: if error.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::CANNOT_EXECUTE
            },
            message: format!("cannot run {}: {error}", program.to_string_lossy()),
        })?;
    let mut lost = std::pin::pin!(lost);
    let mut lost_seen = false;
    let mut interrupted = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        let kill_timer = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|error| {
                    Failure::failed(format!("waiting for {} failed: {error}", program.to_string_lossy()))
                })?;
                return Ok(if lost_seen {
                    ChildEnd::Lost
                } else if interrupted {
                    ChildEnd::Interrupted
                } else {
                    ChildEnd::Exited(code_of(status))
                });
            }
            () = &mut lost, if !lost_seen => {
                lost_seen = true;
                tracing::warn!(
                    grace = ?KILL_GRACE,
                    "the hold was lost while the command runs: sending it SIGTERM"
                );
                terminate(&mut child, Interrupt::Terminate);
                kill_at = Some(Instant::now() + KILL_GRACE);
            }
            signal = interrupts.recv() => {
                if interrupted || lost_seen {
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
        if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet
            // reaped (tokio reaps it only in `wait`), so it cannot have been reused.
            let sent = unsafe { libc::kill(pid, signal.number()) };
            if sent != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "signalling the command failed");
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
