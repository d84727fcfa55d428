//! Consumers that apply each item in one transaction of theirs (an effect row and the
//! delivery's acknowledgement), killed at random points of it, and some paused past
//! their session while another consumer takes their item over: after the trials,
//! every item's effect is applied exactly once, and the queue is empty.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{
    ensure, eventually_progressing, join_all, violated, within, within_set_up, Bounded, Check,
    Context, Fail, Holds, Task, LONG,
};
use crate::faults::caller_transactions::{scope_of, CallerTransactions};
use crate::faults::child::{self, Launcher};
use crate::faults::effects_worker::{Role, Said, Worker, WorkerSpec};
use crate::harness::Harness;
use crate::rng::Rng;

/// How many consumers are killed, in all.
const KILLS: usize = 200;

/// How many consumers are killed at a time.
const KILL_LANES: usize = 3;

/// How many consumers are paused past their session.
const PAUSES: usize = 5;

/// How many items the killed consumers' queue gets: more than the kills can take (a
/// consumer takes one to three before its kill), so that each kill lands on work, not
/// on an empty queue.
const ITEMS: u64 = 800;

/// How long a worker may take to start: a process, a runtime and a connection, on a
/// machine busy with the other cases.
const START: Duration = Duration::from_secs(30);

/// How long a killed consumer is given to reach its kill point.
const STEP: Duration = Duration::from_secs(10);

/// How long after a paused consumer's TTL its item may take to reach another consumer:
/// the store's expiry check, a waiting consumer's re-check, a transaction.
const TAKE_OVER_SLACK: Duration = Duration::from_secs(5);

/// What the pause lane saw.
#[derive(Default)]
struct Paused {
    /// Acknowledgements refused to a consumer woken from its pause.
    refused: usize,
    /// Transactions the store ended while their consumer was paused (a connection idle
    /// inside a transaction ended by the server), found rolled back on waking.
    rolled_back: usize,
    /// Of those two, the items another consumer had applied by the time it woke.
    taken_over: usize,
}

/// The case body (see the module docs).
pub(super) async fn crashes_and_pauses(h: Harness) -> Check {
    let transactions = h.caller_transactions().ctx("the caller's database")?;
    let launcher = child::launcher().map_err(Fail::Unsupported)?;
    let scope = scope_of(&h.key("effects"));
    transactions
        .prepare(&scope)
        .bounded("creating the effects table")
        .await?;
    let queue = h.name("work").ctx("the queue's name")?;
    let items = h.backend().queue(queue.clone()).ctx("the queue")?;
    // Before any fault: a machine too slow for it measured nothing. One after another:
    // producers at once race for the queue's tail and retry (on MariaDB, eight at a time
    // took half again as long). The bound is twice a contention phase's: 800
    // transactions on a store whose revision row a column's other cases share (on
    // MariaDB in CI they took 32-35 s).
    within_set_up(LONG * 2, "enqueueing the items", async {
        for id in 0..ITEMS {
            items.enqueue(id.to_string()).await?;
        }
        Ok(())
    })
    .await?;
    let spec = WorkerSpec {
        url: transactions.url(),
        role: Role::Consumer,
        scope: scope.clone(),
        queue: queue.to_string(),
        first: 0,
        ttl_ms: u64::try_from(h.holder_ttl().as_millis()).unwrap_or(u64::MAX),
    };

    let (kills, paused, paused_spec) = run_trials(&h, launcher, &spec, &transactions).await?;

    let applied = finish(
        &h,
        launcher,
        [&spec, &spec, &paused_spec],
        &transactions,
        &scope,
    )
    .await?;

    applied_once(&applied, kills)?;
    let left = items.len().bounded("the queue's length").await?;
    ensure!(
        left == 0,
        "every item was applied once, but {left} are still in the queue"
    );
    // The tables go with the case; one left behind (a failed drop) holds nothing that
    // another case reads.
    if let Err(error) = transactions.forget(&scope).await {
        tracing::debug!(%error, scope, "dropping a case's tables");
    }
    Ok(Holds::figure(
        format!(
            "{kills} kills, {PAUSES} pauses: {} items applied once each, {} stale \
             acknowledgements refused, {} transactions rolled back by the store",
            ITEMS + PAUSES as u64,
            paused.refused,
            paused.rolled_back
        ),
        format!(
            "{KILL_LANES} consumers at a time, each killed after 0 to 2 applied items and up \
             to 3 ms after receiving the next; of the consumers paused past their session \
             TTL ({:?}), {} were refused and {} found their transaction rolled back by the \
             store, their items applied by another ({} before they woke)",
            h.holder_ttl(),
            paused.refused,
            paused.rolled_back,
            paused.taken_over
        ),
    ))
}

/// Consumers started and killed one after the other, [`KILLS`] / [`KILL_LANES`] of them
/// (fewer if `trials_until` comes first); returns how many were killed.
async fn kill_lane(
    launcher: &'static Launcher,
    spec: WorkerSpec,
    lane: usize,
    trials_until: Instant,
) -> Check<usize> {
    let mut rng = Rng::new(0xe0e0 + lane as u64);
    let mut kills = 0;
    for _ in (lane..KILLS).step_by(KILL_LANES) {
        if Instant::now() >= trials_until {
            break;
        }
        let mut worker =
            within(START, "starting a consumer", Worker::spawn(launcher, &spec)).await?;
        // A kill point: after 0 to 2 applied items, up to 3 ms after receiving the next
        // (before its effect is written, between the write and the acknowledgement,
        // during the commit, or after it). A consumer that takes longer than STEP to get
        // there (a loaded machine; every free item held by a killed consumer whose session
        // has not expired yet) is killed where it is; one whose session lapsed (refused,
        // or lost while it waited: a starved consumer's lease runs out) has ended its
        // trial itself. Only the effects at the end are judged.
        let mut applied = 0;
        let wanted = rng.below(3);
        let step_by = Instant::now() + STEP;
        loop {
            let Ok(said) = tokio::time::timeout_at(step_by, worker.next()).await else {
                break;
            };
            match said.ctx("a consumer's next step")? {
                Said::Received(_) if applied == wanted => break,
                Said::Applied(_) => applied += 1,
                // A transaction the store ended (the item comes back): no kill point.
                Said::Received(_) | Said::RolledBack(_) => {}
                Said::Refused(_) | Said::Lost => break,
                other => return violated(format!("a consumer said `{other}`")),
            }
        }
        tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
        worker.kill().await.ctx("killing a consumer")?;
        kills += 1;
    }
    Ok(kills)
}

/// Pause trials on a queue of their own, one item each: a consumer receives the item
/// and is paused up to 3 ms later; a second consumer is started, which takes the item
/// over once the paused one's session has expired and applies it (unless the pause came
/// after the acknowledgement, whose row lock keeps the item from everyone else, or after
/// the commit); then the paused consumer is woken, and is either refused (its write
/// rolled back), finds that the store ended its transaction while it was paused (a
/// server that ends a connection idle inside a transaction: its write rolled back, a
/// transient error) or commits the application it had made before the pause.
async fn pause_lane(
    launcher: &'static Launcher,
    spec: WorkerSpec,
    items: Arc<dyn distsync_core::Queue>,
    transactions: Arc<dyn CallerTransactions>,
    ttl: Duration,
) -> Check<Paused> {
    let mut rng = Rng::new(0x5e5e);
    let mut seen = Paused::default();
    for trial in 0..PAUSES {
        let id = ITEMS + trial as u64;
        items
            .enqueue(id.to_string())
            .bounded("enqueueing a paused consumer's item")
            .await?;
        let mut first =
            within(START, "starting a consumer", Worker::spawn(launcher, &spec)).await?;
        // An earlier trial's item that nobody applied by the end of its trial (its second
        // consumer took longer than the trial gives it, and was stopped) is still queued,
        // ahead of this one: this consumer applies it first.
        loop {
            match within(LONG, "a consumer's item", first.next()).await? {
                Said::Received(received) if received == id => break,
                Said::Received(earlier) | Said::Applied(earlier) | Said::RolledBack(earlier)
                    if (ITEMS..id).contains(&earlier) => {}
                other => {
                    return violated(format!("a consumer said `{other}`, not `received {id}`"))
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
        first.pause().ctx("pausing a consumer")?;
        let give_up = Instant::now() + ttl + TAKE_OVER_SLACK;
        let second = within(
            START,
            "starting a second consumer",
            Worker::spawn(launcher, &spec),
        )
        .await?;
        let taken_over = loop {
            let applied = transactions
                .effects(&spec.scope)
                .bounded("reading the effects")
                .await?;
            if applied.binary_search(&id).is_ok() {
                break true;
            }
            if Instant::now() >= give_up {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        drop(second);
        first.resume().ctx("resuming a consumer")?;
        let outcome = within(LONG, "the woken consumer's answer", async {
            loop {
                if let said @ (Said::Applied(_) | Said::Refused(_) | Said::RolledBack(_)) =
                    first.next().await?
                {
                    return Ok(said);
                }
            }
        })
        .await?;
        // Applied: the pause came after its commit, or after its acknowledgement (whose
        // row lock kept the item from the second consumer); whether anyone applied it
        // twice is judged with every other item at the end.
        // Refused, or rolled back by the store (its connection ended while it was
        // paused inside the transaction): its effect row went with its transaction.
        match outcome {
            Said::Refused(_) => seen.refused += 1,
            Said::RolledBack(_) => seen.rolled_back += 1,
            _ => {}
        }
        if matches!(outcome, Said::Refused(_) | Said::RolledBack(_)) {
            seen.taken_over += usize::from(taken_over);
        }
        first.kill().await.ctx("stopping a consumer")?;
    }
    Ok(seen)
}

/// The trials: [`KILL_LANES`] lanes of consumers killed at random points, and a lane
/// of consumers paused past their session on a queue of its own. Returns the kills,
/// what the pause lane saw, and the paused consumers' worker spec.
async fn run_trials(
    h: &Harness,
    launcher: &'static Launcher,
    spec: &WorkerSpec,
    transactions: &Arc<dyn CallerTransactions>,
) -> Check<(usize, Paused, WorkerSpec)> {
    // The lanes stop starting trials once half their time is used: on a loaded machine
    // (every free item held by a killed consumer until its lease ends) fewer kills fit,
    // and the figure says how many were made; what is judged is the effects.
    let trials_until = Instant::now() + LONG;
    let mut kill_lanes: Vec<Task<usize>> = (0..KILL_LANES)
        .map(|lane| {
            Task::spawn(
                format!("consumer lane {lane}"),
                kill_lane(launcher, spec.clone(), lane, trials_until),
            )
        })
        .collect();
    let paused_queue = h.name("paused").ctx("the paused consumers' queue's name")?;
    let paused_spec = WorkerSpec {
        queue: paused_queue.to_string(),
        ..spec.clone()
    };
    let mut pause_lane = Task::spawn(
        "the paused consumers",
        pause_lane(
            launcher,
            paused_spec.clone(),
            Arc::from(
                h.backend()
                    .queue(paused_queue)
                    .ctx("the paused consumers' queue")?,
            ),
            Arc::clone(transactions),
            h.holder_ttl(),
        ),
    );
    let kills: usize = join_all(&mut kill_lanes, LONG * 2).await?.into_iter().sum();
    let paused = pause_lane.join(LONG * 2).await?;
    Ok((kills, paused, paused_spec))
}

/// Consumers that are not killed apply what is left; returns the effects applied once
/// every item was.
async fn finish(
    h: &Harness,
    launcher: &'static Launcher,
    specs: [&WorkerSpec; 3],
    transactions: &Arc<dyn CallerTransactions>,
    scope: &str,
) -> Check<Vec<u64>> {
    // Consumers that are not killed apply what is left, the items of killed consumers
    // once their sessions expire (on both queues: a second consumer of a pause trial may
    // have been stopped holding its item).
    let mut finishers = Vec::new();
    for spec in specs {
        finishers.push(within(START, "starting a consumer", Worker::spawn(launcher, spec)).await?);
    }
    // Judged on progress: every finisher's apply is a transaction of the store's,
    // slow on a loaded machine; an item nobody can take stops the count.
    let applied = eventually_progressing(
        h.holder_ttl() * 3 + LONG,
        "every item applied (distinct items applied)",
        || async {
            let applied = transactions
                .effects(scope)
                .bounded("reading the effects")
                .await?;
            let distinct = (applied.windows(2).filter(|pair| pair[0] != pair[1]).count()
                + usize::from(!applied.is_empty())) as u64;
            Ok((
                distinct,
                (distinct >= ITEMS + PAUSES as u64).then_some(applied),
            ))
        },
    )
    .await?;
    drop(finishers);
    Ok(applied)
}

/// Every item's effect applied once, and none of an item never enqueued.
fn applied_once(applied: &[u64], kills: usize) -> Check<()> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for id in applied {
        *counts.entry(*id).or_default() += 1;
    }
    let twice: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let strangers: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|id| *id >= ITEMS + PAUSES as u64)
        .collect();
    ensure!(
        twice.is_empty() && strangers.is_empty(),
        "after {kills} consumer kills and {PAUSES} pauses: items applied more than once \
         (id, times) {twice:?}, effects of items never enqueued {strangers:?}"
    );
    Ok(())
}
