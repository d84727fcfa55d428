//! `distsync lock NAME [-- CMD ARGS...]`.

use std::time::Duration;

use distsync::lock::LockOptions;
use distsync::{Name, Session};

use crate::args::{LockArgs, WaitArgs};
use crate::context::{close, Ctx};
use crate::exit::Failure;
use crate::hold::{self, Hold};

/// Acquires the lock, prints `NAME key=<key> token=<token>`, and holds it while CMD runs
/// (or until interrupted), then releases it and closes the session. With `--no-wait`
/// or `--timeout`, not getting it is exit code 1 (CMD does not run). With
/// `--lock-delay`, a grant that follows a holder's unclean loss is withheld for the
/// delay (inside `--timeout`; `--no-wait` waits it out once granted). With `--unfair`,
/// the unfair lock. With `--revocable`, a release request (`distsync revoke NAME`) sends CMD SIGTERM (without
/// CMD: releases the lock).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: LockArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let session = ctx.session().await?;
    let outcome = locked(
        ctx,
        &session,
        &name,
        options(args.lock_delay, args.unfair),
        args.revocable,
        args.wait,
        &args.command,
    )
    .await;
    close(&session).await;
    outcome
}

/// The lock's options, or `None` for the default lock.
fn options(lock_delay: Option<Duration>, unfair: bool) -> Option<LockOptions> {
    if lock_delay.is_none() && !unfair {
        return None;
    }
    let options = LockOptions::new().lock_delay(lock_delay.unwrap_or_default());
    Some(if unfair { options.unfair() } else { options })
}

async fn locked(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    options: Option<LockOptions>,
    revocable: bool,
    wait: WaitArgs,
    command: &[std::ffi::OsString],
) -> Result<u8, Failure> {
    if revocable && !ctx.coordinator.capabilities().release_request {
        return Err(distsync::Error::unsupported(
            ctx.coordinator.capabilities().backend,
            "release requests (--revocable)",
        )
        .into());
    }
    let locker = match options {
        Some(options) => ctx
            .coordinator
            .locker_with(session, name.as_str(), options)?,
        // The coordinator's locker: its guards watch for release requests.
        None if revocable => ctx.coordinator.locker(session, name.as_str())?,
        None => ctx
            .coordinator
            .backend()
            .locker(session, name.clone())?
            .into(),
    };
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
    let requested = revocable.then(|| {
        let requested = guard.release_requested();
        let watch: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            if let Err(error) = requested.await {
                tracing::warn!(%error, "release requests cannot be watched");
                std::future::pending::<()>().await;
            }
        });
        watch
    });
    hold::keep_revocable(
        name,
        Hold::Exclusive(guard),
        command,
        ctx.grace,
        &mut ctx.interrupts,
        requested,
    )
    .await
}
