//! `distsync barrier NAME hold|release|wait`.

use distsync::Name;

use crate::args::{BarrierAction, BarrierArgs};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;

/// Holds (prints `held`), releases (prints `released`) or waits until the barrier is
/// not held (prints `passed`).
///
/// # Errors
/// See the exit codes in the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: BarrierArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let barrier = ctx.coordinator.backend().barrier(name)?;
    match args.action {
        BarrierAction::Hold => {
            ctx.wait(barrier.hold(), None).await?;
            say!("held");
        }
        BarrierAction::Release => {
            ctx.wait(barrier.release(), None).await?;
            say!("released");
        }
        BarrierAction::Wait => {
            ctx.wait(barrier.wait(), None).await?;
            say!("passed");
        }
    }
    Ok(exit::OK)
}
