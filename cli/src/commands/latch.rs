//! `distsync latch NAME COUNT count-down|wait|count`.

use crate::args::{LatchAction, LatchArgs};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;

/// Counts the latch down once and prints the remaining count (`count-down`), waits
/// until it is open and prints `open` (`wait`), or prints the remaining count
/// (`count`). A latch that exists with another initial count is a usage error (exit
/// 2).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: LatchArgs) -> Result<u8, Failure> {
    let latch = ctx.coordinator.latch(&args.name, args.count)?;
    match args.action {
        LatchAction::CountDown => {
            let left = ctx.wait(latch.count_down(), None).await?;
            say!("{left}");
        }
        LatchAction::Wait => {
            ctx.wait(latch.wait(), None).await?;
            say!("open");
        }
        LatchAction::Count => {
            let left = ctx.wait(latch.count(), None).await?;
            say!("{left}");
        }
    }
    Ok(exit::OK)
}
