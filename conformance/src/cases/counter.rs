//! Counter cases: concurrent adds never lost (also across a partition of one client,
//! where an unacknowledged add is applied at most once), exactly one of racing
//! compare-and-sets wins, overflow refused, the value survives a restart, and a
//! waiter in `changed` sees every write promptly (also after a partition of its own
//! connection, and after a cut long enough to end the sessions of its client).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync_core::counter::CHANGED_SAFETY_NET;
use distsync_core::{Backend, Capabilities, Counter, Error, Name};
use tokio::time::Instant;

use super::{boxed, SURVIVES};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, partitioned_client_with_timeouts, retry_transient, within, Bounded, Check,
    Context, Holds, Task, LONG, PROMPT,
};
use crate::faults::{Hook, PartitionMode, PrivateServer};
use crate::harness::Harness;

/// The claim of the counter rows: the backend's `counter` flag.
const COUNTER: Claim = Claim::Flag("counter", |c: &Capabilities| c.counter);

/// The counter cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "counter_concurrent_adds",
        group: Group::Counter,
        guarantee: "concurrent adds from several clients: final value = sum of the adds",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[],
        run: |h| boxed(concurrent_adds(h)),
    },
    Case {
        id: "counter_adds_across_partition",
        group: Group::Counter,
        guarantee: "one adder partitioned mid-run: acknowledged adds never lost, \
                    unacknowledged ones applied at most once",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[Hook::Partition],
        run: |h| boxed(adds_across_partition(h)),
    },
    Case {
        id: "counter_cas_one_winner",
        group: Group::Counter,
        guarantee: "compare_and_set: exactly one of N racing swaps from one value wins",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[],
        run: |h| boxed(cas_one_winner(h)),
    },
    Case {
        id: "counter_overflow_refused",
        group: Group::Counter,
        guarantee: "a fresh counter reads 0; an add that overflows i64 is a typed error and \
                    changes nothing",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[],
        run: |h| boxed(overflow_refused(h)),
    },
    Case {
        id: "counter_changed_notifies",
        group: Group::Counter,
        guarantee: "changed(seen): a waiting client sees each add, set and compare_and_set \
                    within 1 s (the safety-net read is every 5 s); it never returns the value \
                    it was given",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[],
        run: |h| boxed(changed_notifies(h)),
    },
    Case {
        id: "counter_changed_across_partition",
        group: Group::Counter,
        guarantee: "changed(seen) on a client partitioned (reset, then silent) while the counter \
                    changes: after the heal it returns the new value, no hang, no error",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[Hook::Partition],
        run: |h| boxed(changed_across_partition(h)),
    },
    Case {
        id: "counter_changed_across_session_end",
        group: Group::Counter,
        guarantee: "changed(seen) on a client cut off (reset, then silent) for longer than a \
                    session: a write after the heal wakes it with the new value, no error",
        needs: &[Need::Counter],
        claim: COUNTER,
        hooks: &[Hook::Partition],
        run: |h| boxed(changed_across_session_end(h)),
    },
    Case {
        id: "counter_survives_restart",
        group: Group::Counter,
        guarantee: "restart: a counter's value survives",
        needs: &[Need::Counter],
        claim: SURVIVES,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(survives_restart(h)),
    },
];

/// A counter of `backend` named `name`.
fn counter(backend: &Arc<dyn Backend>, name: &Name) -> Check<Arc<dyn Counter>> {
    Ok(Arc::from(
        backend.counter(name.clone()).ctx("making a counter")?,
    ))
}

/// The value, read through a client behind the partition proxy before it is cut off: a
/// transient error (a connection the proxy's last reset closed, reopened late on a loaded
/// machine) is read again, as a caller would, within [`PROMPT`]. Not the case's fault:
/// what the cases judge is the wait that follows.
async fn read_through_proxy(waiter: &dyn Counter) -> Check<i64> {
    within(
        PROMPT,
        "reading through the proxy",
        retry_transient(&AtomicUsize::new(0), PROMPT, || waiter.get()),
    )
    .await
}

/// Several tasks add distinct deltas at once; the final value is their sum and each
/// task's answers grow with its own adds.
async fn concurrent_adds(h: Harness) -> Check {
    const TASKS: i64 = 6;
    const ADDS: i64 = 40;
    let name = h.name("hits").ctx("naming the counter")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let counter = counter(h.backend(), &name)?;
        tasks.push(Task::spawn(format!("adder {t}"), async move {
            for _ in 0..ADDS {
                counter
                    .add(t + 1)
                    .bounded(format!("adder {t} adding"))
                    .await?;
            }
            Ok(())
        }));
    }
    join_all(&mut tasks, LONG).await?;
    let took = started.elapsed();
    let expected: i64 = (1..=TASKS).sum::<i64>() * ADDS;
    let value = counter(h.backend(), &name)?
        .get()
        .bounded("reading the counter")
        .await?;
    ensure!(
        value == expected,
        "{} adds from {TASKS} tasks summed to {expected}, the counter reads {value}",
        TASKS * ADDS
    );
    Ok(Holds::figure(
        format!("{} adds in {} ms", TASKS * ADDS, took.as_millis()),
        format!("{TASKS} concurrent adders: the counter reads the sum {expected}"),
    ))
}

/// How long the partitioned client's requests (and its connection, a new ZooKeeper
/// session included) may take before they fail: a second, as the other cut-off cases
/// give, since a session's first request on a loaded machine can take half of it.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// A client through the proxy adds 1 in a loop while two others add 1 too; the proxy
/// resets its connections for a while mid-run. The final value lies between the sum of
/// acknowledged adds and that plus the adds that failed while they may have applied.
async fn adds_across_partition(h: Harness) -> Check {
    const ADDS: i64 = 30;
    let name = h.name("hits").ctx("naming the counter")?;
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let cut = counter(&partition.backend(), &name)?;
    let acknowledged = Arc::new(AtomicI64::new(0));
    let ambiguous = Arc::new(AtomicI64::new(0));
    let refused = Arc::new(AtomicI64::new(0));
    let cut_task = {
        let (acknowledged, ambiguous, refused) =
            (acknowledged.clone(), ambiguous.clone(), refused.clone());
        Task::spawn("the partitioned adder", async move {
            let deadline = Instant::now() + LONG;
            let mut done = 0;
            while done < ADDS * 3 && Instant::now() < deadline {
                match tokio::time::timeout(PROMPT, cut.add(1)).await {
                    Ok(Ok(_)) => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(error)) if error.may_have_applied() => {
                        ambiguous.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(_)) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    // A dropped add may have applied, as an ambiguous error.
                    Err(_) => {
                        ambiguous.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        })
    };
    let mut others = Vec::new();
    for t in 0..2 {
        let counter = counter(h.backend(), &name)?;
        others.push(Task::spawn(format!("adder {t}"), async move {
            // The case judges the count, not the speed: an add only has to finish
            // (within LONG, so that a hung one still fails the case), and the slowest
            // goes into the figure, so a store slow under load shows in the matrix
            // without reading as a lost add.
            let mut slowest = Duration::ZERO;
            for done in 0..ADDS {
                let started = Instant::now();
                within(
                    LONG,
                    format!("adder {t} adding, after {done} adds (the slowest took {slowest:?})"),
                    counter.add(1),
                )
                .await?;
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    partition.set(PartitionMode::Reset);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    partition.set(PartitionMode::Forward);
    let slowest = join_all(&mut others, LONG)
        .await?
        .into_iter()
        .max()
        .unwrap_or_default();
    let mut cut_task = cut_task;
    cut_task.join(LONG * 2).await?;
    let value = counter(h.backend(), &name)?
        .get()
        .bounded("reading the counter")
        .await?;
    let acked = acknowledged.load(Ordering::SeqCst) + 2 * ADDS;
    let maybe = ambiguous.load(Ordering::SeqCst);
    let refused = refused.load(Ordering::SeqCst);
    ensure!(
        value >= acked,
        "{acked} adds of 1 were acknowledged but the counter reads {value}: an acknowledged \
         add was lost"
    );
    ensure!(
        value <= acked + maybe,
        "the counter reads {value}, more than the {acked} acknowledged adds plus the {maybe} \
         that may have applied: an add applied twice, or one reported as not applied was"
    );
    Ok(Holds::figure(
        format!(
            "{acked} acknowledged, {maybe} ambiguous, {refused} refused; value {value}; the \
             slowest add of a connected adder took {slowest:.1?}"
        ),
        "a reset partition of one adder: no acknowledged add lost, none applied twice",
    ))
}

/// Rounds of racing swaps from the current value: exactly one wins each round, and the
/// counter holds the winner's value.
async fn cas_one_winner(h: Harness) -> Check {
    const ROUNDS: i64 = 5;
    const RACERS: i64 = 6;
    let name = h.name("cas").ctx("naming the counter")?;
    let mut current = 0;
    for round in 0..ROUNDS {
        let mut racers = Vec::new();
        for r in 0..RACERS {
            let counter = counter(h.backend(), &name)?;
            let new = (round + 1) * 100 + r;
            racers.push(Task::spawn(
                format!("round {round} racer {r}"),
                async move {
                    let won = counter
                        .compare_and_set(current, new)
                        .bounded("compare_and_set")
                        .await?;
                    Ok((won, new))
                },
            ));
        }
        let results = join_all(&mut racers, PROMPT * 2).await?;
        let winners: Vec<i64> = results
            .iter()
            .filter(|(won, _)| *won)
            .map(|(_, new)| *new)
            .collect();
        ensure!(
            winners.len() == 1,
            "round {round}: {} of {RACERS} swaps from {current} won: {winners:?}",
            winners.len()
        );
        let value = counter(h.backend(), &name)?
            .get()
            .bounded("reading the counter")
            .await?;
        ensure!(
            value == winners[0],
            "round {round}: the swap to {} won but the counter reads {value}",
            winners[0]
        );
        current = value;
    }
    Ok(Holds::new(format!(
        "{ROUNDS} rounds of {RACERS} racing swaps: exactly one won each round"
    )))
}

/// A fresh counter reads 0; adding past `i64::MAX` (or below `i64::MIN`) is
/// `InvalidArgument`, changes nothing and is not reported as possibly applied.
async fn overflow_refused(h: Harness) -> Check {
    let name = h.name("big").ctx("naming the counter")?;
    let counter = counter(h.backend(), &name)?;
    let fresh = counter.get().bounded("reading a fresh counter").await?;
    ensure!(fresh == 0, "a counter never written reads {fresh}, not 0");
    counter
        .set(i64::MAX - 1)
        .bounded("setting the counter")
        .await?;
    match counter.add(2).await {
        Err(Error::InvalidArgument(_)) => {}
        other => {
            return crate::check::violated(format!(
                "adding 2 to i64::MAX - 1 gave {other:?}, not InvalidArgument"
            ))
        }
    }
    let after = counter.get().bounded("reading the counter").await?;
    ensure!(
        after == i64::MAX - 1,
        "a refused overflowing add left {after}, not i64::MAX - 1"
    );
    counter.set(i64::MIN).bounded("setting the counter").await?;
    ensure!(
        matches!(counter.add(-1).await, Err(Error::InvalidArgument(_))),
        "subtracting 1 from i64::MIN was not refused"
    );
    let top = counter.add(i64::MAX).bounded("adding i64::MAX").await?;
    ensure!(top == -1, "i64::MIN + i64::MAX gave {top}, not -1");
    Ok(Holds::new(
        "a fresh counter read 0; overflowing adds both ways were refused and changed nothing",
    ))
}

/// How soon a waiter in `changed` must see a write: far below [`CHANGED_SAFETY_NET`],
/// so a backend whose notifications do not arrive fails the row.
const NOTIFIED_WITHIN: Duration = Duration::from_secs(1);

/// Rounds of: a task waits in `changed(seen)`; it must still wait after the settle time
/// (nothing changed); another handle writes (add, set, compare-and-set in turn); the
/// waiter returns the written value within [`NOTIFIED_WITHIN`] of the write.
async fn changed_notifies(h: Harness) -> Check {
    const ROUNDS: i64 = 6;
    let name = h.name("watched").ctx("naming the counter")?;
    let writer = counter(h.backend(), &name)?;
    let mut seen = writer.get().bounded("reading the counter").await?;
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let waiter = counter(h.backend(), &name)?;
        let mut waiting = Task::spawn(format!("the waiter of round {round}"), async move {
            let value = waiter.changed(seen).await.ctx("waiting for a change")?;
            Ok((value, Instant::now()))
        });
        // Also lets the waiter subscribe, so the write comes while it waits.
        waiting
            .ensure_blocked(h.settle(), format!("the counter still read {seen}"))
            .await?;
        // From before the write: the write's own round trip counts against the bound.
        let writing = Instant::now();
        let (written, how) = match round % 3 {
            0 => (writer.add(round + 1).bounded("adding").await?, "add"),
            1 => {
                let value = seen * 2 + 1;
                writer.set(value).bounded("setting").await?;
                (value, "set")
            }
            _ => {
                let value = seen + 10;
                let swapped = writer
                    .compare_and_set(seen, value)
                    .bounded("compare_and_set")
                    .await?;
                ensure!(
                    swapped,
                    "round {round}: a swap from the value read, {seen}, failed"
                );
                (value, "compare_and_set")
            }
        };
        let (value, woke) = waiting.join(PROMPT * 2).await?;
        let took = woke.saturating_duration_since(writing);
        ensure!(
            value == written,
            "round {round}: changed({seen}) returned {value} after a {how} wrote {written}"
        );
        ensure!(
            took <= NOTIFIED_WITHIN,
            "round {round}: changed({seen}) returned {took:?} after a {how} (bound \
             {NOTIFIED_WITHIN:?}; the safety-net read is every {CHANGED_SAFETY_NET:?})"
        );
        slowest = slowest.max(took);
        seen = written;
    }
    Ok(Holds::figure(
        format!("slowest wake {} ms", slowest.as_millis()),
        format!(
            "{ROUNDS} writes (add, set, compare_and_set) each seen by the waiting client within \
             {} ms",
            slowest.as_millis()
        ),
    ))
}

/// A client through the proxy waits in `changed`; its connections are cut (reset in
/// the first round, silenced in the second) while another client adds; after the heal
/// the waiter returns the new value, within the safety net plus a prompt margin.
async fn changed_across_partition(h: Harness) -> Check {
    let name = h.name("watched").ctx("naming the counter")?;
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let writer = counter(h.backend(), &name)?;
    let mut after_heal = Vec::new();
    for (round, mode) in [PartitionMode::Reset, PartitionMode::Silent]
        .into_iter()
        .enumerate()
    {
        let waiter = counter(&partition.backend(), &name)?;
        let seen = read_through_proxy(&*waiter).await?;
        let mut waiting = Task::spawn(
            format!("the partitioned waiter of round {round}"),
            async move {
                let value = waiter.changed(seen).await.ctx("waiting for a change")?;
                Ok((value, Instant::now()))
            },
        );
        waiting
            .ensure_blocked(h.settle(), format!("the counter still read {seen}"))
            .await?;
        partition.set(mode);
        let written = writer
            .add(1)
            .bounded("adding while the waiter is cut off")
            .await?;
        // Long enough for the waiter's requests to time out (REQUEST_TIMEOUT) and its
        // notification channel to miss the write, and shorter than a session, so that
        // the cut tests a missed notification rather than a session's end.
        tokio::time::sleep(REQUEST_TIMEOUT + REQUEST_TIMEOUT / 2).await;
        ensure!(
            !waiting.is_finished(),
            "round {round}: the waiter returned while cut off from the store ({mode:?})"
        );
        partition.set(PartitionMode::Forward);
        let healed = Instant::now();
        let (value, woke) = waiting.join(CHANGED_SAFETY_NET + PROMPT).await?;
        ensure!(
            value == written,
            "round {round}: after the heal changed({seen}) returned {value}, the counter was \
             {written}"
        );
        after_heal.push(woke.saturating_duration_since(healed).as_millis());
    }
    Ok(Holds::figure(
        format!("woke {after_heal:?} ms after the heals"),
        "a waiter cut off (reset, then silenced) while the counter changed returned the new \
         value after each heal",
    ))
}

/// How long [`changed_across_session_end`] (and the latch's twin) cuts the waiter off: longer than the
/// sessions a backend keeps for calls that belong to no distsync session, so that the
/// cut ends them. ZooKeeper's last 4 s (four times its minimum TTL), and its client ends
/// one itself 1.4 times that after it last heard from the server, 5.6 s; seven seconds
/// also outlast [`crate::FAULT_TTL`] three times over.
pub(super) const SESSION_END_CUT: Duration = Duration::from_secs(7);

/// A client through the proxy waits in `changed`; its connections are cut (reset in the
/// first round, silenced in the second) for [`SESSION_END_CUT`], during which nothing
/// changes and the waiter must go on waiting; after the heal another client adds, and
/// the waiter returns the new value within the safety net plus a prompt margin of that
/// write. A session that ends under a wait is no failure of the wait: a counter keeps
/// nothing in it.
async fn changed_across_session_end(h: Harness) -> Check {
    let name = h.name("watched").ctx("naming the counter")?;
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let writer = counter(h.backend(), &name)?;
    let mut woke_after_write = Vec::new();
    for (round, mode) in [PartitionMode::Reset, PartitionMode::Silent]
        .into_iter()
        .enumerate()
    {
        let waiter = counter(&partition.backend(), &name)?;
        let seen = read_through_proxy(&*waiter).await?;
        let mut waiting = Task::spawn(format!("the cut-off waiter of round {round}"), async move {
            let value = waiter.changed(seen).await.ctx("waiting for a change")?;
            Ok((value, Instant::now()))
        });
        waiting
            .ensure_blocked(h.settle(), format!("the counter still read {seen}"))
            .await?;
        partition.set(mode);
        tokio::time::sleep(SESSION_END_CUT).await;
        partition.set(PartitionMode::Forward);
        if waiting.is_finished() {
            let (value, _) = waiting.join(PROMPT).await?;
            return crate::check::violated(format!(
                "round {round}: changed({seen}) returned {value} while cut off ({mode:?}), \
                 although nothing was written"
            ));
        }
        let writing = Instant::now();
        let written = writer.add(1).bounded("adding after the heal").await?;
        let (value, woke) = waiting.join(CHANGED_SAFETY_NET + PROMPT).await?;
        ensure!(
            value == written,
            "round {round}: after the heal changed({seen}) returned {value}, the counter was \
             {written}"
        );
        woke_after_write.push(woke.saturating_duration_since(writing).as_millis());
    }
    Ok(Holds::figure(
        format!("woke {woke_after_write:?} ms after the writes"),
        format!(
            "a waiter cut off for {} s (reset, then silenced) went on waiting and returned \
             the value written after each heal",
            SESSION_END_CUT.as_secs()
        ),
    ))
}

/// A counter's value is kept across a restart of the server.
async fn survives_restart(h: Harness) -> Check {
    let mut server: Box<dyn PrivateServer> = within(
        LONG,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let backend = within(PROMPT, "connecting to the private server", server.connect()).await?;
    let name = h.name("kept").ctx("naming the counter")?;
    let before = counter(&backend, &name)?;
    before.add(41).bounded("adding").await?;
    before.add(1).bounded("adding").await?;
    within(LONG, "stopping the private server", server.stop()).await?;
    within(LONG, "starting the private server again", server.start()).await?;
    let after = counter(&backend, &name)?;
    let value = crate::check::eventually(LONG, "reading the counter after the restart", || {
        let after = after.clone();
        async move { Ok(after.get().await.ok()) }
    })
    .await?;
    ensure!(
        value == 42,
        "the counter read 42 before the restart, {value} after"
    );
    Ok(Holds::new(
        "the counter read 42 before and after the restart",
    ))
}
