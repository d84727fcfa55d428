//! `distsync double-barrier NAME COUNT`.

use std::num::NonZeroUsize;

use distsync::{Name, Session};

use crate::args::DoubleBarrierArgs;
use crate::context::{close, Ctx};
use crate::exit::{self, Failure};
use crate::output::say;
use crate::stdin::Lines;
use crate::wait::{race, Raced};

/// Enters (prints `entered` once COUNT participants have), waits for a line or the end
/// of standard input, leaves (prints `left` once all have left).
///
/// Interrupted before leaving, the entry is dropped with the session.
///
/// # Errors
/// Exit code 2 for a count of zero or a participant over the count; else see the crate
/// docs.
pub(super) async fn run(ctx: &mut Ctx, args: DoubleBarrierArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    // Checked before a session is opened: the backend takes only a non-zero count.
    let count = NonZeroUsize::new(args.count)
        .ok_or_else(|| Failure::usage("a double barrier needs a count of at least 1"))?;
    let session = ctx.session().await?;
    let outcome = participate(ctx, &session, name, count).await;
    close(&session).await;
    outcome
}

async fn participate(
    ctx: &mut Ctx,
    session: &Session,
    name: Name,
    count: NonZeroUsize,
) -> Result<u8, Failure> {
    let barrier = ctx
        .coordinator
        .backend()
        .double_barrier(session, name, count)?;
    let mut lines = Lines::spawn();
    ctx.wait(barrier.enter(), Some(session)).await?;
    say!("entered");
    match race(lines.next(), &mut ctx.interrupts, Some(session)).await {
        Raced::Done(_) => {}
        Raced::Interrupted => return Err(Failure::interrupted()),
        Raced::Lost => return Err(Failure::session_lost("while entered")),
    }
    ctx.wait(barrier.leave(), Some(session)).await?;
    say!("left");
    Ok(exit::OK)
}
