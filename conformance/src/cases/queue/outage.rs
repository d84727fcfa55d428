//! A consumer waiting through an outage: core's retry policy
//! (`distsync_core::raw::retry`) says a wait rides out transient store failures for
//! as long as its caller waits, with no hidden give-up, while a one-shot call retries
//! only within a short budget. This case cuts one client off its store (a reset
//! partition: connections closed, new ones refused) for longer than that budget and
//! measures both kinds of call, and a `timeout()` deadline that passes during the
//! outage.

use std::time::Duration;

use distsync_core::raw::retry::ONE_SHOT_BUDGET;
use distsync_core::{Backend, Bytes, Error, Name};
use tokio::time::Instant;

use crate::check::{
    ms, partitioned_client_with_timeouts, violated, Bounded, Check, Context, Holds, LONG,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// How long the store stays unreachable: longer than the one-shot budget, so a wait
/// that gave up like a one-shot call would be seen.
const OUTAGE: Duration = Duration::from_secs(5);

/// The cut-off client's `timeout=` and `connect_timeout=`: one attempt's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// What a one-shot call may take beyond its budget: its last attempt (one request
/// timeout, two for PostgreSQL's pool and reply) and scheduling.
const MARGIN: Duration = Duration::from_millis(2500);

/// How long the bounded `dequeue` made during the outage waits: long enough for its
/// first store request to fail (within twice the request timeout, PostgreSQL's bound),
/// so the wait knows the store is failing when its deadline passes.
const DEADLINE: Duration = Duration::from_millis(3000);

/// A consumer waiting in `dequeue` while its store is unreachable for [`OUTAGE`] is
/// still waiting after the heal and receives the item enqueued then; a `try_dequeue`
/// made during the outage fails with a transient error within the one-shot budget and
/// a margin; a `dequeue` under `timeout()` whose deadline passes during the outage returns the
/// store's transient error, not `Timeout`.
pub(super) async fn dequeue_waits_through_an_outage(h: Harness) -> Check {
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let client = partition.backend();
    let name = h.name("outage-queue").ctx("naming the queue")?;
    let consumer = client.queue(name.clone()).ctx("making the consumer")?;
    // The consumer is waiting on an empty queue before the cut.
    let waiting = tokio::spawn(async move { consumer.dequeue().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if waiting.is_finished() {
        return violated("dequeue on an empty queue returned before anything was enqueued");
    }

    partition.set(PartitionMode::Reset);
    let cut = Instant::now();

    let try_took = one_shot_fails_within_its_budget(&*client, &name).await?;
    let deadline_error = deadline_gives_the_store_error(&*client, &name).await?;

    if let Some(rest) = OUTAGE.checked_sub(cut.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let outage = cut.elapsed();
    if waiting.is_finished() {
        let result = waiting.await;
        return violated(format!(
            "the waiting dequeue gave up during a {} outage: {result:?}",
            ms(outage)
        ));
    }
    partition.set(PartitionMode::Forward);
    let healed = Instant::now();

    // The item enqueued after the heal reaches the consumer that waited through it.
    h.backend()
        .queue(name.clone())
        .ctx("making the producer")?
        .enqueue(Bytes::from_static(b"after the outage"))
        .bounded("enqueueing after the heal")
        .await?;
    let received = match tokio::time::timeout(LONG, waiting).await {
        Err(_) => {
            return violated(format!(
                "the consumer that waited through the outage did not receive the item \
                 enqueued after the heal within {}",
                ms(LONG)
            ))
        }
        Ok(Err(panic)) => return violated(format!("the waiting consumer panicked: {panic}")),
        Ok(Ok(Err(error))) => {
            return violated(format!(
                "the consumer that waited through the outage failed after the heal: {error}"
            ))
        }
        Ok(Ok(Ok(item))) => item,
    };
    let delivered = healed.elapsed();
    if received != Bytes::from_static(b"after the outage") {
        return violated(format!("the waiting consumer received {received:?}"));
    }
    let rest = h
        .backend()
        .queue(name)
        .ctx("making the checking client")?
        .try_dequeue()
        .bounded("checking the queue is empty")
        .await?;
    if let Some(rest) = rest {
        return violated(format!("an item was left in the queue: {rest:?}"));
    }
    drop(partition);
    Ok(Holds::figure(
        format!(
            "waited through {}; item received {} after the heal; try_dequeue failed in {}",
            ms(outage),
            ms(delivered),
            ms(try_took)
        ),
        format!(
            "reset partition of {} (one-shot budget {}); a dequeue under timeout({}) during it gave \
             the store's error ({deadline_error})",
            ms(OUTAGE),
            ms(ONE_SHOT_BUDGET),
            ms(DEADLINE)
        ),
    ))
}

/// A one-shot call during the outage: a transient error within the budget (and a
/// margin); returns how long it took.
async fn one_shot_fails_within_its_budget(client: &dyn Backend, name: &Name) -> Check<Duration> {
    let one_shot = client
        .queue(name.clone())
        .ctx("making the one-shot client")?;
    let bound = ONE_SHOT_BUDGET + MARGIN;
    let started = Instant::now();
    match tokio::time::timeout(bound, one_shot.try_dequeue()).await {
        Err(_) => violated(format!(
            "try_dequeue during the outage was still running after {} (budget {} and {})",
            ms(bound),
            ms(ONE_SHOT_BUDGET),
            ms(MARGIN)
        )),
        Ok(Ok(item)) => violated(format!(
            "try_dequeue answered {item:?} although no connection reached the store"
        )),
        Ok(Err(error)) if error.is_transient() => Ok(started.elapsed()),
        Ok(Err(error)) => violated(format!(
            "try_dequeue during the outage: expected a transient error, got {error}"
        )),
    }
}

/// A deadline passing during the outage: the store's error, not a plain timeout;
/// returns that error.
async fn deadline_gives_the_store_error(client: &dyn Backend, name: &Name) -> Check<Error> {
    let timed = client
        .queue(name.clone())
        .ctx("making the timed consumer")?;
    match distsync_core::timeout(DEADLINE, timed.dequeue()).await {
        Ok(item) => violated(format!(
            "a dequeue under timeout() answered {item:?} although no connection reached the store"
        )),
        Err(Error::Timeout(_)) => violated(format!(
            "a dequeue under timeout({}) during the outage gave a plain Timeout, not the store's \
                 error",
            ms(DEADLINE)
        )),
        Err(error) if error.is_transient() => Ok(error),
        Err(error) => violated(format!(
            "a dequeue under timeout() during the outage: expected the store's transient error, \
                 got {error}"
        )),
    }
}
