//! `distsync queue NAME push [--key KEY] [ITEM] | pop | receive [-- CMD] | len |
//! dead list|redrive|purge`.

use std::ffi::OsString;
use std::io::Write as _;

use distsync::{Bytes, Delivery, Name, Queue, Session};
use tokio::io::AsyncReadExt as _;

use crate::args::{DeadAction, QueueAction, QueueArgs, WaitArgs};
use crate::child::{self, ChildEnd, Stop};
use crate::context::{close, Ctx};
use crate::exit::{self, Failure};
use crate::items::{self, Encoding};
use crate::output::say;
use crate::wait::{race, Raced};

/// The environment variable that tells `receive`'s CMD the queue's name.
const ENV_QUEUE: &str = "DISTSYNC_QUEUE";
/// The environment variable that tells `receive`'s CMD how many times the item was
/// delivered before (0 on its first delivery).
const ENV_REDELIVERIES: &str = "DISTSYNC_REDELIVERIES";

/// What `--no-wait` and `--timeout` say when no item comes.
const EMPTY: (&str, &str) = ("is empty", "nothing received");

/// Pushes (printing nothing), pops or receives (printing the item, or piping it to CMD)
/// or counts (printing the number).
///
/// # Errors
/// Exit code 1 when `--no-wait` finds the queue empty or `--timeout` passes first; 4
/// when an item cannot be written out or acknowledged; else see the crate docs.
pub(super) async fn run(ctx: &mut Ctx, args: QueueArgs) -> Result<u8, Failure> {
    let name = Name::new(args.name)?;
    let queue = ctx.coordinator.backend().queue(name.clone())?;
    match args.action {
        QueueAction::Push {
            item,
            priority,
            key,
            format,
        } => {
            let key = key
                .map(distsync::queue::IdempotencyKey::new)
                .transpose()
                .map_err(|error| Failure::usage(format!("--key: {error}")))?;
            let pushing = Push {
                priority,
                key: key.as_ref(),
            };
            push(ctx, queue.as_ref(), &name, item, pushing, format.encoding()).await
        }
        QueueAction::Pop { wait, format } => {
            let item = ctx
                .acquire(
                    wait,
                    &format!("queue {name}"),
                    EMPTY,
                    queue.dequeue(),
                    queue.try_dequeue(),
                    None,
                )
                .await?;
            write_out(&item, format.encoding()).map_err(|error| {
                // At most once: the item is no longer in the queue, so it goes to
                // standard error rather than nowhere.
                Failure::failed(format!(
                    "writing the item popped from queue {name} failed ({error}); it is no \
                     longer in the queue: {}",
                    items::to_json(&item)
                ))
            })?;
            Ok(exit::OK)
        }
        QueueAction::Receive {
            wait,
            format,
            command,
        } => {
            let session = ctx.session().await?;
            let outcome = receive(
                ctx,
                queue.as_ref(),
                &session,
                &name,
                wait,
                format.encoding(),
                &command,
            )
            .await;
            close(&session).await;
            outcome
        }
        QueueAction::Len => {
            let len = ctx.wait(queue.len(), None).await?;
            say!("{len}");
            Ok(exit::OK)
        }
        QueueAction::Dead {
            action,
            dead_letter,
        } => dead(ctx, &name, action, dead_letter).await,
    }
}

/// Lists, re-drives or purges the dead letters of queue `name`, through the library's
/// [`distsync::queue::Consumer`] so that the command and a consumer agree on where they are.
async fn dead(
    ctx: &mut Ctx,
    name: &Name,
    action: DeadAction,
    dead_letter: Option<String>,
) -> Result<u8, Failure> {
    let mut options = distsync::queue::ConsumerOptions::default();
    if let Some(dead_letter) = dead_letter {
        options = options.dead_letter(dead_letter);
    }
    let consumer = ctx.coordinator.consumer(name.as_str(), options)?;
    match action {
        DeadAction::List { format } => {
            let items = ctx.wait(consumer.dead_letters(), None).await?;
            let encoding = format.encoding();
            let mut out = std::io::stdout().lock();
            items
                .iter()
                .try_for_each(|item| items::write(&mut out, item, encoding))
                .and_then(|()| out.flush())
                .map_err(|error| {
                    Failure::failed(format!(
                        "writing the dead letters of queue {name} failed ({error}); they are \
                         still in {}",
                        consumer.dead_letter_queue().name()
                    ))
                })?;
        }
        DeadAction::Redrive => {
            let moved = ctx.wait(consumer.redrive(), None).await?;
            say!("{moved}");
        }
        DeadAction::Purge => {
            let deleted = ctx.wait(consumer.purge(), None).await?;
            say!("{deleted}");
        }
    }
    Ok(exit::OK)
}

/// How `push` appends: at which priority, under which idempotency key.
struct Push<'a> {
    priority: u16,
    key: Option<&'a distsync::queue::IdempotencyKey>,
}

/// Pushes ITEM, or every item of standard input, read and decoded in full first; with
/// a key, exactly one item, appended unless the key was pushed within the dedup window
/// (then a note on standard error, and exit 0: the push had already happened).
async fn push(
    ctx: &mut Ctx,
    queue: &dyn Queue,
    name: &Name,
    item: Option<OsString>,
    how: Push<'_>,
    encoding: Encoding,
) -> Result<u8, Failure> {
    let priority = how.priority;
    let items = match item {
        Some(arg) => vec![items::from_arg(&arg, encoding).map_err(Failure::usage)?],
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            return Err(Failure::usage(
                "no ITEM, and standard input is a terminal: pass ITEM or pipe the items in",
            ))
        }
        None => {
            let mut input = Vec::new();
            let mut stdin = tokio::io::stdin();
            let read = stdin.read_to_end(&mut input);
            match race(read, &mut ctx.interrupts, None).await {
                Raced::Done(Ok(_)) => {}
                Raced::Done(Err(error)) => {
                    return Err(Failure::failed(format!(
                        "reading items from standard input: {error}"
                    )))
                }
                Raced::Interrupted | Raced::Lost => return Err(Failure::interrupted()),
            }
            items::from_input(&input, encoding).map_err(Failure::usage)?
        }
    };
    let count = items.len();
    if let Some(key) = how.key {
        let [item] = <[Bytes; 1]>::try_from(items).map_err(|items| {
            Failure::usage(format!("--key takes exactly one item, got {}", items.len()))
        })?;
        let enqueued = ctx
            .wait(queue.enqueue_once(key, item, priority), None)
            .await?;
        if !enqueued.is_new() {
            eprintln!("queue {name}: key {key} was pushed already (within 24 h); nothing appended");
        }
        return Ok(exit::OK);
    }
    for (pushed, item) in items.into_iter().enumerate() {
        match ctx
            .wait(queue.enqueue_with_priority(item, priority), None)
            .await
        {
            Ok(()) => {}
            Err(failure) if pushed == 0 => return Err(failure),
            Err(mut failure) => {
                if failure.message.is_empty() {
                    failure.message = "interrupted".into();
                }
                failure.message = format!(
                    "{} after pushing {pushed} of {count} items",
                    failure.message
                );
                return Err(failure);
            }
        }
    }
    Ok(exit::OK)
}

/// Receives one item through `session` and prints it (acknowledging it once written),
/// or pipes it to `command` (acknowledging it when the command exits 0).
async fn receive(
    ctx: &mut Ctx,
    queue: &dyn Queue,
    session: &Session,
    name: &Name,
    wait: WaitArgs,
    encoding: Encoding,
    command: &[OsString],
) -> Result<u8, Failure> {
    let delivery = ctx
        .acquire(
            wait,
            &format!("queue {name}"),
            EMPTY,
            queue.receive(session),
            queue.try_receive(session),
            Some(session),
        )
        .await?;
    if !command.is_empty() {
        return process(ctx, session, name, delivery, command).await;
    }
    match write_out(delivery.item(), encoding) {
        Ok(()) => {
            acknowledge(delivery, name, "printed").await?;
            Ok(exit::OK)
        }
        Err(error) => {
            give_back(delivery, name).await;
            Err(Failure::failed(format!(
                "writing the item of queue {name} failed ({error}); it is back in the queue"
            )))
        }
    }
}

/// Runs `command` with the delivered item as its standard input, then acknowledges the
/// item (exit 0) or gives it back (anything else), and returns CMD's exit code.
async fn process(
    ctx: &mut Ctx,
    session: &Session,
    name: &Name,
    delivery: Delivery,
    command: &[OsString],
) -> Result<u8, Failure> {
    let env = [
        (ENV_QUEUE, name.to_string()),
        (ENV_REDELIVERIES, delivery.redeliveries().to_string()),
    ];
    let stop = Stop {
        lost: delivery.lost(),
        health: session.health_watch(),
        grace: ctx.grace,
        requested: None,
    };
    let input = Some(delivery.item().clone());
    let end = child::run(command, &env, input, stop, &mut ctx.interrupts).await;
    match end {
        Ok(ChildEnd::Exited(0)) => {
            acknowledge(delivery, name, "processed").await?;
            Ok(exit::OK)
        }
        Ok(ChildEnd::Exited(code)) => {
            give_back(delivery, name).await;
            Ok(code)
        }
        // CMD may have exited 0 from its signal handler without finishing: the item
        // goes back rather than risk losing it.
        Ok(ChildEnd::Interrupted) => {
            give_back(delivery, name).await;
            Ok(exit::INTERRUPTED)
        }
        Ok(ChildEnd::Lost) => {
            give_back(delivery, name).await;
            Err(Failure::session_lost(
                "while the command was running (or its renewals failed); it was stopped and \
                 the item goes back to the queue",
            ))
        }
        Err(failure) => {
            give_back(delivery, name).await;
            Err(failure)
        }
    }
}

/// Acknowledges `delivery`, whose item was `done` (printed, processed).
///
/// # Errors
/// Exit code 3 when the session ended first, 4 for the store's error: either way the
/// item goes back to the queue and will be delivered again.
async fn acknowledge(delivery: Delivery, name: &Name, done: &str) -> Result<(), Failure> {
    delivery.ack().await.map_err(|error| {
        let again = format!(
            "the item of queue {name} was {done} but acknowledging it failed ({error}); it \
             goes back to the queue and will be delivered again"
        );
        match error {
            distsync::Error::SessionLost => Failure {
                code: exit::SESSION_LOST,
                message: again,
            },
            _ => Failure::failed(again),
        }
    })
}

/// Puts the item back at its place (nack). A failure is only logged: the item goes
/// back when the session ends anyway, which closing it does at once.
async fn give_back(delivery: Delivery, name: &Name) {
    if let Err(error) = delivery.nack().await {
        tracing::warn!(queue = %name, %error, "giving the item back failed; it goes back when the session ends");
    }
}

/// Writes `item` to standard output in `encoding` and flushes it.
fn write_out(item: &Bytes, encoding: Encoding) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    items::write(&mut out, item, encoding)?;
    out.flush()
}
