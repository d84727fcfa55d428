//! `distsync queue NAME push ITEM [--priority N] | pop [--no-wait] | len`.

use distsync::{Bytes, Name};

use super::Ctx;
use crate::args::{QueueAction, QueueArgs};
use crate::exit::{self, Failure};
use crate::output::{say, text};

/// Pushes (printing nothing), pops (printing the item) or counts (printing the number).
///
/// # Errors
/// Exit code 1 for `pop --no-wait` on an empty queue; else see the crate docs.
pub async fn run(ctx: &mut Ctx, args: QueueArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let queue = ctx.coordinator.backend().queue(name.clone())?;
    match args.action {
        QueueAction::Push { item, priority } => {
            ctx.wait(
                queue.enqueue_with_priority(Bytes::from(item), priority),
                None,
            )
            .await?;
        }
        QueueAction::Pop { no_wait: false } => {
            let item = ctx.wait(queue.dequeue(), None).await?;
            say!("{}", text(&item));
        }
        QueueAction::Pop { no_wait: true } => match ctx.wait(queue.try_dequeue(), None).await? {
            Some(item) => say!("{}", text(&item)),
            None => return Err(Failure::failed(format!("queue {name} is empty"))),
        },
        QueueAction::Len => {
            let len = ctx.wait(queue.len(), None).await?;
            say!("{len}");
        }
    }
    Ok(exit::OK)
}
