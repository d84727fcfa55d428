//! `distsync rwlock NAME read|write [-- CMD ARGS...]`.

use std::ffi::OsString;

use distsync::{Name, Session};

use super::{close, Ctx};
use crate::args::{RwLockArgs, RwMode};
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
    let outcome = locked(ctx, &session, &name, args.mode, &args.command).await;
    close(&session).await;
    outcome
}

async fn locked(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    mode: RwMode,
    command: &[OsString],
) -> Result<u8, Failure> {
    let rwlock = ctx.coordinator.backend().rwlock(session, name.clone())?;
    let held = match mode {
        RwMode::Read => Hold::Shared(ctx.wait(rwlock.read(), Some(session)).await?),
        RwMode::Write => Hold::Exclusive(ctx.wait(rwlock.write(), Some(session)).await?),
    };
    hold::keep(name, held, command, ctx.grace, &mut ctx.interrupts).await
}
