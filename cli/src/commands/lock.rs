//! `distsync lock NAME [-- CMD ARGS...]`.

use distsync::{Name, Session};

use crate::args::{LockArgs, WaitArgs};
use crate::context::{close, Ctx};
use crate::exit::Failure;
use crate::hold::{self, Hold};

/// Acquires the lock, prints `NAME key=<key> token=<token>`, and holds it while CMD runs
/// (or until interrupted), then releases it and closes the session. With `--no-wait`
/// or `--timeout`, not getting it is exit code 1 (CMD does not run).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: LockArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let session = ctx.session().await?;
    let outcome = locked(ctx, &session, &name, args.wait, &args.command).await;
    close(&session).await;
    outcome
}

async fn locked(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    wait: WaitArgs,
    command: &[std::ffi::OsString],
) -> Result<u8, Failure> {
    let locker = ctx.coordinator.backend().locker(session, name.clone())?;
    let guard = ctx
        .acquire(
            wait,
            &format!("lock {name}"),
            ("is held elsewhere", "not acquired"),
            locker.lock(),
            locker.try_lock(),
            Some(session),
        )
        .await?;
    hold::keep(
        name,
        Hold::Exclusive(guard),
        command,
        ctx.grace,
        &mut ctx.interrupts,
    )
    .await
}
