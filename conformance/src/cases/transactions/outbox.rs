//! Producers that place orders, each order row and its outbox item in one transaction
//! of theirs, killed at random points: after the trials, every order has its item and
//! every item its order, once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::check::{
    ensure, join_all, violated, within, Bounded, Check, Context, Fail, Holds, Task, LONG, PROMPT,
};
use crate::faults::caller_transactions::scope_of;
use crate::faults::child::{self, Launcher};
use crate::faults::effects_worker::{Role, Said, Worker, WorkerSpec};
use crate::harness::Harness;
use crate::rng::Rng;

/// How many producers are killed, in all.
const TRIALS: usize = 200;

/// How many producers run at once.
const LANES: usize = 4;

/// How long a worker may take to start: a process, a runtime and a connection, on a
/// machine busy with the other cases.
const START: Duration = Duration::from_secs(30);

/// How long a killed producer is given to reach its kill point.
const STEP: Duration = Duration::from_secs(10);

/// Order ids a producer may use: each trial starts at its own multiple of this.
const IDS_PER_TRIAL: u64 = 1_000_000;

/// The case body (see the module docs).
pub(super) async fn crashes(h: Harness) -> Check {
    let transactions = h.caller_transactions().ctx("the caller's database")?;
    let launcher = child::launcher().map_err(Fail::Unsupported)?;
    let scope = scope_of(&h.key("outbox"));
    transactions
        .prepare(&scope)
        .bounded("creating the business tables")
        .await?;
    let queue = h.name("outbox").ctx("the queue's name")?;
    let spec = WorkerSpec {
        url: transactions.url(),
        role: Role::Producer,
        scope: scope.clone(),
        queue: queue.to_string(),
        first: 0,
        ttl_ms: 0,
    };
    let mut lanes: Vec<Task<usize>> = (0..LANES)
        .map(|lane| {
            Task::spawn(
                format!("producer lane {lane}"),
                producer_lane(launcher, spec.clone(), lane),
            )
        })
        .collect();
    let placed_seen: usize = join_all(&mut lanes, LONG * 2).await?.into_iter().sum();

    // A producer killed as its COMMIT reached the server may still be committing while
    // the tables are read: the server finishes it once the kill has closed the socket.
    // Its order and its item land together, but between two reads. So the orders are
    // read before the queue is drained and again after: an order seen before has its
    // item in the queue, and an item drained has its order in the second read, however
    // late the last commits land.
    let orders_before = transactions
        .orders(&scope)
        .bounded("reading the orders")
        .await?;
    let items = h.backend().queue(queue.clone()).ctx("the queue")?;
    let mut queued: BTreeMap<u64, usize> = BTreeMap::new();
    while let Some(item) = within(PROMPT, "draining the queue", items.try_dequeue()).await? {
        let id = std::str::from_utf8(&item)
            .ok()
            .and_then(|text| text.parse::<u64>().ok());
        let Some(id) = id else {
            return violated(format!("an item that is no order id: {item:?}"));
        };
        *queued.entry(id).or_default() += 1;
    }
    let orders = transactions
        .orders(&scope)
        .bounded("reading the orders again")
        .await?;
    let without_item: Vec<u64> = orders_before
        .iter()
        .copied()
        .filter(|id| !queued.contains_key(id))
        .collect();
    let without_order: Vec<u64> = queued
        .keys()
        .copied()
        .filter(|id| orders.binary_search(id).is_err())
        .collect();
    let twice: Vec<u64> = queued
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    ensure!(
        without_item.is_empty() && without_order.is_empty() && twice.is_empty(),
        "after {TRIALS} producer kills: orders without their item {without_item:?}, items \
         without their order {without_order:?}, items queued twice {twice:?}"
    );
    ensure!(
        orders.len() >= placed_seen,
        "{placed_seen} orders were reported committed but {} are in the table",
        orders.len()
    );
    // The tables go with the case; one left behind (a failed drop) holds nothing that
    // another case reads.
    if let Err(error) = transactions.forget(&scope).await {
        tracing::debug!(%error, scope, "dropping a case's tables");
    }
    Ok(Holds::figure(
        format!(
            "{TRIALS} producer kills: {} orders, each with its item",
            orders.len()
        ),
        format!(
            "{LANES} producers at a time, each killed after 0 to 2 committed orders and up \
             to 3 ms into its next transaction; no order without its item, no item without \
             its order or twice"
        ),
    ))
}

/// Producers started and killed one after the other, [`TRIALS`] / [`LANES`] of them;
/// returns how many orders they reported committed.
async fn producer_lane(launcher: &'static Launcher, spec: WorkerSpec, lane: usize) -> Check<usize> {
    let mut rng = Rng::new(0x0b0c + lane as u64);
    let mut placed = 0_usize;
    for trial in (lane..TRIALS).step_by(LANES) {
        let spec = WorkerSpec {
            first: trial as u64 * IDS_PER_TRIAL,
            ..spec.clone()
        };
        let mut worker =
            within(START, "starting a producer", Worker::spawn(launcher, &spec)).await?;
        // A kill point: after 0 to 2 committed orders, up to 3 ms into the
        // next transaction (one takes a few ms: begin, the row, the item,
        // commit). A producer slower than STEP to get there (a loaded
        // machine) is killed where it is: only the tables at the end are
        // judged.
        let step_by = tokio::time::Instant::now() + STEP;
        for _ in 0..rng.below(3) {
            let Ok(said) = tokio::time::timeout_at(step_by, worker.next()).await else {
                break;
            };
            match said.ctx("a producer's next order")? {
                Said::Placed(_) => placed += 1,
                other => return violated(format!("a producer said `{other}`")),
            }
        }
        tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
        worker.kill().await.ctx("killing a producer")?;
    }
    Ok(placed)
}
