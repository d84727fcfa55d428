//! `distsync rwlock NAME read|write [-- CMD ARGS...]`.

use std::ffi::OsString;

use distsync::{Name, Session};

use crate::args::{RwLockArgs, RwMode, WaitArgs};
use crate::context::{close, Ctx};
use crate::exit::Failure;
use crate::hold::{self, Hold};

/// Acquires a read or write hold, prints `NAME key=<key>` (plus `token=<token>` for a
/// write hold), and holds it while CMD runs (or until interrupted).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: RwLockArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let session = ctx.session().await?;
    let outcome = locked(ctx, &session, &name, args.mode, args.wait, &args.command).await;
    close(&session).await;
    outcome
}

async fn locked(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    mode: RwMode,
    wait: WaitArgs,
    command: &[OsString],
) -> Result<u8, Failure> {
    let rwlock = ctx.coordinator.backend().rwlock(session, name.clone())?;
    let held = match mode {
        RwMode::Read => Hold::Shared(
            ctx.acquire(
                wait,
                &format!("read lock {name}"),
                ("is blocked by a writer", "not acquired"),
                rwlock.read(),
                rwlock.try_read(),
                Some(session),
            )
            .await?,
        ),
        RwMode::Write => Hold::Exclusive(
            ctx.acquire(
                wait,
                &format!("write lock {name}"),
                ("is held elsewhere", "not acquired"),
                rwlock.write(),
                rwlock.try_write(),
                Some(session),
            )
            .await?,
        ),
    };
    hold::keep(name, held, command, ctx.grace, &mut ctx.interrupts).await
}
