//! `distsync ratelimit NAME N/PERIOD [-- CMD ARGS...]`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use distsync::rate_limiter::Rate;

use crate::args::RatelimitArgs;
use crate::context::Ctx;
use crate::exit::{self, Failure};

/// Takes one permit of the rate limiter NAME at N/PERIOD (waiting until it is due;
/// `--no-wait`: only if it is due now, else exit 1; `--timeout`: exit 1 if not due in
/// time), then replaces this process with CMD, so that CMD's exit code (and its
/// signals) are the command's own. Without CMD it exits 0 once the permit is taken.
///
/// Nothing is held once the permit is taken, which is why `exec` suits: there is
/// nothing to release after CMD.
///
/// # Errors
/// See the exit codes in the crate docs: 2 for a bad rate, a burst below 1, a limiter
/// in use at another rate, or a backend without rate limiters (etcd); 126/127 when CMD
/// cannot be run or is not found.
pub(super) async fn run(ctx: &mut Ctx, args: RatelimitArgs) -> Result<u8, Failure> {
    let mut rate: Rate = args.rate.parse()?;
    if let Some(burst) = args.burst {
        rate = rate.with_burst(burst)?;
    }
    let limiter = ctx.coordinator.rate_limiter(&args.name, rate)?;
    let once = async {
        let admission = limiter.try_acquire(1).await?;
        if let Some(wait) = admission.retry_after() {
            tracing::info!(?wait, "no permit due yet");
        }
        Ok(admission.is_granted().then_some(()))
    };
    ctx.acquire(
        args.wait,
        &format!("rate limiter {}", args.name),
        ("has no permit due", "no permit due"),
        limiter.acquire(1),
        once,
        None,
    )
    .await?;
    exec(&args.command)
}

/// Replaces the process with `command`; returns only when it cannot.
fn exec(command: &[OsString]) -> Result<u8, Failure> {
    let Some((program, rest)) = command.split_first() else {
        return Ok(exit::OK);
    };
    let error = std::process::Command::new(program).args(rest).exec();
    Err(Failure {
        code: if error.kind() == std::io::ErrorKind::NotFound {
            exit::NOT_FOUND
        } else {
            exit::CANNOT_EXECUTE
        },
        message: format!("cannot run {}: {error}", program.to_string_lossy()),
    })
}
