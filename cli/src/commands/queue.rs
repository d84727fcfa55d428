//! `distsync queue NAME push ITEM [--priority N] | pop [--no-wait] | receive [--no-wait]
//! | len`.

use std::io::Write as _;

use distsync::{Bytes, Name};

use super::Ctx;
use crate::args::{QueueAction, QueueArgs};
use crate::exit::{self, Failure};
use crate::output::{say, text};

/// Pushes (printing nothing), pops or receives (printing the item) or counts (printing
/// the number). `receive` holds the item through a session and acknowledges it only
/// once it is written to stdout; a failed write puts it back (nack), and so does the
/// end of the session if the process dies before.
///
/// # Errors
/// Exit code 1 for `pop --no-wait` or `receive --no-wait` on an empty queue, or when
/// the received item could not be written out; else see the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: QueueArgs) -> Result<u8, Failure> {
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
        QueueAction::Receive { no_wait } => {
            let session = ctx.session().await?;
            let delivery = if no_wait {
                match ctx
                    .wait(queue.try_receive(&session), Some(&session))
                    .await?
                {
                    Some(delivery) => delivery,
                    None => return Err(Failure::failed(format!("queue {name} is empty"))),
                }
            } else {
                ctx.wait(queue.receive(&session), Some(&session)).await?
            };
            let written = {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", text(delivery.item())).and_then(|()| out.flush())
            };
            match written {
                Ok(()) => ctx.wait(delivery.ack(), None).await?,
                Err(error) => {
                    ctx.wait(delivery.nack(), None).await?;
                    return Err(Failure::failed(format!(
                        "writing the item of queue {name} failed ({error}); it is back in the queue"
                    )));
                }
            }
            ctx.wait(session.close(), None).await?;
        }
        QueueAction::Len => {
            let len = ctx.wait(queue.len(), None).await?;
            say!("{len}");
        }
    }
    Ok(exit::OK)
}
