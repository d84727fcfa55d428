//! The queue demo: `push ITEM [PRIORITY]`, `pop`, `len`.

use distsync::{Name, Queue};

use super::{blocking, next_input, report, split, unknown, Input};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::{say, text};
use crate::stdin::Lines;

/// The queue demo on the queue `name`. Items are single words, as in etcd's Go demo.
///
/// # Errors
/// Exit code 2 when the backend offers no queue.
pub(super) async fn run(ctx: &mut Ctx, lines: &mut Lines, name: Name) -> Result<u8, Failure> {
    let queue = ctx.coordinator.backend().queue(name)?;
    loop {
        let input = next_input(lines, &mut ctx.interrupts, None).await;
        let Input::Line(line) = input else {
            return input.exit().unwrap_or(Ok(exit::OK));
        };
        if let Err(end) = handle(ctx, queue.as_ref(), &line).await {
            return end.exit().unwrap_or(Ok(exit::OK));
        }
    }
}

async fn handle(ctx: &mut Ctx, queue: &dyn Queue, line: &str) -> Result<(), Input> {
    let (command, rest) = split(line);
    let words: Vec<&str> = rest.split_whitespace().collect();
    match (command, words.as_slice()) {
        ("push", []) => say!("must set value to push"),
        ("push", [item]) => push(ctx, queue, item, 0).await?,
        ("push", [item, priority]) => match priority.parse::<u16>() {
            Ok(priority) => push(ctx, queue, item, priority).await?,
            Err(_) => say!("error: push: priority {priority:?} is not a number from 0 to 65535"),
        },
        ("pop", []) => match blocking(queue.dequeue(), &mut ctx.interrupts, None).await? {
            Ok(item) => say!("popped {}", text(&item)),
            Err(error) => report("pop", error)?,
        },
        ("len", []) => match blocking(queue.len(), &mut ctx.interrupts, None).await? {
            Ok(len) => say!("len {len}"),
            Err(error) => report("len", error)?,
        },
        ("help", _) => say!("commands: push ITEM [PRIORITY], pop, len, quit"),
        _ => unknown(line),
    }
    Ok(())
}

async fn push(ctx: &mut Ctx, queue: &dyn Queue, item: &str, priority: u16) -> Result<(), Input> {
    let pushed = blocking(
        queue.enqueue_with_priority(item.to_owned(), priority),
        &mut ctx.interrupts,
        None,
    )
    .await?;
    match pushed {
        Ok(()) => say!("pushed {item}"),
        Err(error) => report("push", error)?,
    }
    Ok(())
}
