//! `distsync semaphore NAME N [-- CMD ARGS...]`.

use std::ffi::OsString;
use std::num::NonZeroUsize;

use distsync::{Name, Session};

use crate::args::{SemaphoreArgs, WaitArgs};
use crate::context::{close, Ctx};
use crate::exit::Failure;
use crate::hold::{self, Hold};

/// Acquires one of the semaphore's permits, prints `NAME key=<key> token=<token>`, and
/// holds it while CMD runs (or until interrupted), then releases it and closes the
/// session.
///
/// # Errors
/// See the exit codes in the crate docs (2 for a permit count that differs from the
/// semaphore's in use, or a backend without semaphores).
pub(super) async fn run(ctx: &mut Ctx, args: SemaphoreArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let session = ctx.session().await?;
    let outcome = acquired(ctx, &session, &name, args.permits, args.wait, &args.command).await;
    close(&session).await;
    outcome
}

async fn acquired(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    permits: u32,
    wait: WaitArgs,
    command: &[OsString],
) -> Result<u8, Failure> {
    // The argument parser refuses zero; the conversion keeps that in the type.
    let permits = usize::try_from(permits)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| Failure::usage("permits must be from 1 to usize::MAX"))?;
    let semaphore = ctx
        .coordinator
        .backend()
        .semaphore(session, name.clone(), permits)?;
    let permit = ctx
        .acquire(
            wait,
            &format!("semaphore {name}"),
            ("has no free permit", "no permit acquired"),
            semaphore.acquire(),
            semaphore.try_acquire(),
            Some(session),
        )
        .await?;
    hold::keep(
        name,
        Hold::Permit(permit),
        command,
        ctx.grace,
        &mut ctx.interrupts,
    )
    .await
}
