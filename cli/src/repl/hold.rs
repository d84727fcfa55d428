//! The lock demo (`lock`, `unlock`) and the read-write lock demo (`r`, `w`, `unlock`).
//!
//! etcd's Go rwlock demo takes the lock on `r`/`w`, sleeps, and releases; here the hold
//! lasts until `unlock`, so that two terminals can watch readers share and a writer
//! wait.

use distsync::{Locker, Name, RwLock, Session};

use super::{blocking, next_input, release_quietly, report, split, unknown, Input};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::hold::Hold;
use crate::output::say;
use crate::stdin::Lines;

/// The primitive the demo drives.
enum Primitive {
    Lock(Box<dyn Locker>),
    RwLock(Box<dyn RwLock>),
}

/// What a hold is called in the result lines.
fn label(hold: &Hold, primitive: &Primitive) -> &'static str {
    match (primitive, hold) {
        (_, Hold::Permit(_)) => "permit",
        (Primitive::Lock(_), _) => "lock",
        (Primitive::RwLock(_), Hold::Exclusive(_)) => "write lock",
        (Primitive::RwLock(_), Hold::Shared(_)) => "read lock",
    }
}

/// The lock demo on the lock `name`.
///
/// # Errors
/// Exit code 3 when the session is lost.
pub(super) async fn run_lock(
    ctx: &mut Ctx,
    session: &Session,
    lines: &mut Lines,
    name: Name,
) -> Result<u8, Failure> {
    let locker = ctx.coordinator.backend().locker(session, name)?;
    run(ctx, session, lines, Primitive::Lock(locker)).await
}

/// The read-write lock demo on the lock `name`.
///
/// # Errors
/// Exit code 3 when the session is lost.
pub(super) async fn run_rwlock(
    ctx: &mut Ctx,
    session: &Session,
    lines: &mut Lines,
    name: Name,
) -> Result<u8, Failure> {
    let rwlock = ctx.coordinator.backend().rwlock(session, name)?;
    run(ctx, session, lines, Primitive::RwLock(rwlock)).await
}

async fn run(
    ctx: &mut Ctx,
    session: &Session,
    lines: &mut Lines,
    primitive: Primitive,
) -> Result<u8, Failure> {
    let mut held: Option<Hold> = None;
    let end = loop {
        let input = tokio::select! {
            input = next_input(lines, &mut ctx.interrupts, Some(session)) => input,
            () = lost(held.as_ref()) => {
                if let Some(hold) = held.take() {
                    say!("{} lost", label(&hold, &primitive));
                }
                continue;
            }
        };
        let Input::Line(line) = input else {
            break input;
        };
        if let Err(end) = handle(ctx, session, &primitive, &mut held, &line).await {
            break end;
        }
    };
    if let Some(hold) = held {
        release_quietly("lock", hold.release()).await;
    }
    end.exit().unwrap_or(Ok(exit::OK))
}

async fn lost(hold: Option<&Hold>) {
    match hold {
        Some(hold) => hold.lost().await,
        None => std::future::pending().await,
    }
}

async fn handle(
    ctx: &mut Ctx,
    session: &Session,
    primitive: &Primitive,
    held: &mut Option<Hold>,
    line: &str,
) -> Result<(), Input> {
    let (command, rest) = split(line);
    if !rest.is_empty() {
        unknown(line);
        return Ok(());
    }
    let (what, acquired) = match (primitive, command) {
        (_, "unlock") => {
            match held.take() {
                None => say!("error: nothing is held"),
                Some(hold) => {
                    let what = label(&hold, primitive);
                    match hold.release().await {
                        Ok(()) => say!("released {what}"),
                        Err(error) => report("unlock", error)?,
                    }
                }
            }
            return Ok(());
        }
        (_, "help") => {
            match primitive {
                Primitive::Lock(_) => say!("commands: lock, unlock, quit"),
                Primitive::RwLock(_) => say!("commands: r, w, unlock, quit"),
            }
            return Ok(());
        }
        (Primitive::Lock(locker), "lock") => {
            if already_held(held) {
                return Ok(());
            }
            say!("acquiring lock");
            let acquired = blocking(locker.lock(), &mut ctx.interrupts, Some(session)).await?;
            ("lock", acquired.map(Hold::Exclusive))
        }
        (Primitive::RwLock(rwlock), "w") => {
            if already_held(held) {
                return Ok(());
            }
            say!("acquiring write lock");
            let acquired = blocking(rwlock.write(), &mut ctx.interrupts, Some(session)).await?;
            ("write lock", acquired.map(Hold::Exclusive))
        }
        (Primitive::RwLock(rwlock), "r") => {
            if already_held(held) {
                return Ok(());
            }
            say!("acquiring read lock");
            let acquired = blocking(rwlock.read(), &mut ctx.interrupts, Some(session)).await?;
            ("read lock", acquired.map(Hold::Shared))
        }
        _ => {
            unknown(line);
            return Ok(());
        }
    };
    match acquired {
        Ok(hold) => {
            say!("acquired {what} {}", hold.describe());
            *held = Some(hold);
            Ok(())
        }
        Err(error) => report(what, error),
    }
}

fn already_held(held: &Option<Hold>) -> bool {
    if held.is_some() {
        say!("error: already holding; unlock first");
    }
    held.is_some()
}
