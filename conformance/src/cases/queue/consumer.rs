//! The queue consumer (`distsync_core::consumer`), built on `receive`/`ack`/`nack`
//! alone: on every store it must dead-letter a poison item after exactly
//! `max_deliveries` handler calls without holding up the items behind it, and drop a
//! hung handler at the processing deadline so that its item is handled again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::consumer::{Consumer, ConsumerOptions};
use distsync_core::{BoxError, Bytes, Coordinator, Queue};
use tokio::time::Instant;

use crate::check::{
    ensure, eventually, lock_vec, ms, violated, within, Check, Context, Holds, LONG, PROMPT,
};
use crate::harness::Harness;

/// Handler calls the poison item gets before it is dead-lettered.
const MAX_DELIVERIES: u32 = 3;

/// The processing deadline: long enough for any store's round trips to play no part
/// (the handlers do no I/O), short enough to keep the case quick.
const DEADLINE: Duration = Duration::from_millis(500);

/// The good items, enqueued behind the poison and the hanging item.
const GOOD: [&str; 3] = ["good-0", "good-1", "good-2"];

/// What the handler saw: calls per item, the items it finished with `Ok`, and when the
/// hanging item's second call came.
#[derive(Default)]
struct Seen {
    calls: HashMap<String, u32>,
    handled: Vec<String>,
    hang_again_at: Option<Instant>,
    stop_seen: bool,
}

/// A consumer with `max_deliveries` 3 and a processing deadline runs over
/// `poison` (always fails), `hang` (its first call never finishes) and three good
/// items: the good items are each handled once, `hang` is dropped at the deadline and
/// handled on its second call, and `poison` is called exactly 3 times and then moved to
/// the dead-letter queue, where listing and purging find it alone.
pub(super) async fn poison_and_hung_handlers(h: Harness) -> Check {
    let coordinator = Coordinator::from_arc(h.backend().clone());
    let name = h.name("consumer").ctx("naming the queue")?;
    let options = ConsumerOptions::default()
        .max_deliveries(MAX_DELIVERIES)
        .processing_deadline(DEADLINE)
        .retry(Duration::from_millis(20), Duration::from_millis(100));
    let consumer = coordinator
        .consumer(name.as_str(), options)
        .ctx("making the consumer")?;
    let queue = consumer.queue().clone();
    let dead = consumer.dead_letter_queue().clone();
    for item in ["poison", "hang"].into_iter().chain(GOOD) {
        within(PROMPT, "enqueuing", queue.enqueue(item)).await?;
    }
    let session = within(PROMPT, "opening the session", h.session()).await?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let started = Instant::now();
    let handler = {
        let seen = Arc::clone(&seen);
        move |item: Bytes| {
            let item = String::from_utf8_lossy(&item).into_owned();
            let call = {
                let mut seen = lock_vec(&seen);
                let calls = seen.calls.entry(item.clone()).or_default();
                *calls += 1;
                let call = *calls;
                if item == "hang" && call == 2 {
                    seen.hang_again_at = Some(Instant::now());
                }
                if item == "stop" {
                    seen.stop_seen = true;
                }
                call
            };
            let seen = Arc::clone(&seen);
            async move {
                match (item.as_str(), call) {
                    ("poison", _) => return Err::<(), BoxError>("poison".into()),
                    ("hang", 1) | ("stop", _) => std::future::pending::<()>().await,
                    _ => {}
                }
                lock_vec(&seen).handled.push(item);
                Ok(())
            }
        }
    };
    // Boxed, not pinned on the stack, so that it can be dropped before the checks.
    let mut run = Box::pin(consumer.run(&session, handler));

    // Everything settled: the poison item dead-lettered, the others handled.
    let settled = eventually(LONG, "the consumer settling every item", || {
        let dead = Arc::clone(&dead);
        let seen = Arc::clone(&seen);
        async move {
            let dead_len = dead.len().await.ctx("len() of the dead-letter queue")?;
            let seen = lock_vec(&seen);
            let done = GOOD
                .iter()
                .chain(&["hang"])
                .all(|item| seen.handled.iter().any(|h| h == item));
            Ok((dead_len == 1 && done).then_some(()))
        }
    });
    tokio::select! {
        error = &mut run => return violated(format!("the consumer's run ended: {error}")),
        settled = settled => settled?,
    }
    // A last item, handled after every earlier acknowledgement (the consumer takes
    // one item at a time), then left hanging: stopping the run there returns it.
    within(PROMPT, "enqueuing the last item", queue.enqueue("stop")).await?;
    let stopping = eventually(LONG, "the consumer reaching the last item", || {
        let seen = Arc::clone(&seen);
        async move { Ok(lock_vec(&seen).stop_seen.then_some(())) }
    });
    tokio::select! {
        error = &mut run => return violated(format!("the consumer's run ended: {error}")),
        stopping = stopping => stopping?,
    }
    drop(run);

    let seen = std::mem::take(&mut *lock_vec(&seen));
    let hang_after = handler_calls(&seen, started)?;
    last_item_and_dead_letters(&queue, &consumer).await?;
    let _ = session.close().await;
    Ok(Holds::figure(
        format!(
            "hung item handled again after {}",
            ms(hang_after.unwrap_or_default())
        ),
        format!(
            "poison dead-lettered after exactly {MAX_DELIVERIES} handler calls; the 3 items \
             behind it handled once each; a handler hung past the {} deadline dropped and \
             its item handled again; the dead-letter queue listed and purged",
            ms(DEADLINE)
        ),
    ))
}

/// The handler calls: the poison item's `max_deliveries`, the hanging item's two (the
/// second after the deadline), each good item's one. Returns when the hanging item's
/// second call came.
fn handler_calls(seen: &Seen, started: Instant) -> Check<Option<Duration>> {
    let calls = |item: &str| seen.calls.get(item).copied().unwrap_or(0);
    ensure!(
        calls("poison") == MAX_DELIVERIES,
        "the poison item was handed to the handler {} times (max_deliveries {MAX_DELIVERIES})",
        calls("poison")
    );
    ensure!(
        calls("hang") == 2,
        "the hanging item was handed to the handler {} times (expected 2: dropped at the \
         deadline, then handled)",
        calls("hang")
    );
    for item in GOOD {
        ensure!(
            calls(item) == 1,
            "{item} was handed to the handler {} times",
            calls(item)
        );
    }
    let hang_after = seen
        .hang_again_at
        .map(|at| at.saturating_duration_since(started));
    match hang_after {
        Some(after) if after >= DEADLINE => {}
        other => {
            return violated(format!(
                "the hung item's second call came {other:?} after the start, before the \
                 deadline {}",
                ms(DEADLINE)
            ))
        }
    }
    Ok(hang_after)
}

/// Only the last item is left in the queue (back from the stopped run), and the
/// dead-letter queue lists the poison item alone and purges it.
async fn last_item_and_dead_letters(queue: &Arc<dyn Queue>, consumer: &Consumer) -> Check<()> {
    let rest = eventually(PROMPT, "the last item back in the queue", || {
        let queue = Arc::clone(queue);
        async move {
            let len = queue.len().await.ctx("len()")?;
            Ok((len > 0).then_some(len))
        }
    })
    .await?;
    ensure!(
        rest == 1,
        "{rest} items left in the queue (expected the last one)"
    );
    let last = within(PROMPT, "dequeuing the last item", queue.dequeue()).await?;
    ensure!(last.as_ref() == b"stop", "left in the queue: {last:?}");

    let listed = within(PROMPT, "listing the dead letters", consumer.dead_letters()).await?;
    ensure!(
        listed == [Bytes::from("poison")],
        "the dead-letter queue holds {listed:?}"
    );
    let purged = within(PROMPT, "purging the dead letters", consumer.purge()).await?;
    ensure!(purged == 1, "purge() removed {purged} items (expected 1)");
    Ok(())
}
