//! A Jepsen-style lock workload: workers increment a shared counter with a
//! read-modify-write under the lock, while, round after round, an external holder
//! takes the lock, reads the counter, is paused past its TTL (so the workers carry
//! on without it), wakes, and writes back what it read plus one.
//!
//! Every write goes to two counters kept in this process: a plain one, which takes
//! every write, and a fenced one, which refuses tokens lower than the highest it has
//! seen. Lost updates are the increments acknowledged to their writers that the final
//! value does not contain. The plain counter loses the increments the workers made
//! while the stale holder slept; the fenced one must lose none (it refuses the stale
//! writes, and their writers learn it). The figure reports both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{
    ensure, join_all, lock_vec, violated, within, within_set_up, Bounded, Check, Context, Holds,
    Task, LONG, PROMPT,
};
use crate::cpu_pressure::{eventually_live, Sampler};
use crate::faults::HoldKind;
use crate::fenced::{FencedCounter, PlainCounter};
use crate::harness::Harness;

/// In-process workers, each with its own session.
const WORKERS: usize = 2;
/// Rounds of pause and stale write.
const ROUNDS: usize = 3;
/// Worker increments to wait for while the stale holder sleeps.
const INCREMENTS_PER_PAUSE: u64 = 3;
/// Pacing between a worker's increments, so that the workload leaves the machine to
/// the other fault cases running at the same time.
const PACE: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Counters {
    plain: PlainCounter,
    fenced: FencedCounter,
}

/// The case body (see the module docs).
pub(super) async fn counter(h: Harness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let counters = Arc::new(Mutex::new(Counters::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let session = h.session().set_up("opening a worker's session").await?;
        let locker = h
            .backend()
            .locker(&session, name.clone())
            .ctx("making a worker's locker")?;
        let (counters, stop) = (counters.clone(), stop.clone());
        workers.push(Task::spawn(format!("worker {w}"), async move {
            while !stop.load(Ordering::SeqCst) {
                let guard = within(LONG, format!("worker {w} locking"), locker.lock()).await?;
                let (plain, fenced) = {
                    let counters = lock_vec(&counters);
                    (counters.plain.value(), counters.fenced.value())
                };
                tokio::task::yield_now().await;
                {
                    let mut counters = lock_vec(&counters);
                    counters.plain.write(plain + 1);
                    // A worker holding the lock has the highest token so far.
                    if let Err(refused) = counters.fenced.write(guard.token(), fenced + 1) {
                        return violated(format!(
                            "worker {w} holding the lock had its write refused: {refused}"
                        ));
                    }
                }
                guard
                    .unlock()
                    .bounded(format!("worker {w} unlocking"))
                    .await?;
                tokio::time::sleep(PACE).await;
            }
            drop(session);
            Ok(())
        }));
    }

    let ttl = h.holder_ttl();
    let mut stale_refused = 0;
    for round in 0..ROUNDS {
        let mut holder = within_set_up(
            LONG,
            format!("round {round}: starting an external holder"),
            h.spawn_holder(HoldKind::Lock, "mutex"),
        )
        .await?;
        // It holds the lock, so the workers are blocked: this is what it reads.
        let (read_plain, read_fenced, writes_before) = {
            let counters = lock_vec(&counters);
            (
                counters.plain.value(),
                counters.fenced.value(),
                counters.plain.writes(),
            )
        };
        // A liveness bound: the time the machine was CPU-starved meanwhile (the store
        // expiring the paused holder's lease, the workers woken) is added to it.
        let paused = Instant::now();
        let pressure = Sampler::start(paused);
        holder.pause().await.ctx("pausing the holder")?;
        eventually_live(
            paused,
            ttl * 3 + PROMPT,
            pressure.as_ref(),
            format!("round {round}: workers incrementing while the holder sleeps"),
            || async {
                let writes = lock_vec(&counters).plain.writes();
                Ok((writes >= writes_before + INCREMENTS_PER_PAUSE).then_some(()))
            },
        )
        .await?;
        holder.resume().await.ctx("resuming the holder")?;
        let token = within(PROMPT, "the woken holder's write", holder.write()).await?;
        {
            let mut counters = lock_vec(&counters);
            counters.plain.write(read_plain + 1);
            if counters.fenced.write(token, read_fenced + 1).is_err() {
                stale_refused += 1;
            }
        }
        drop(holder);
    }
    stop.store(true, Ordering::SeqCst);
    join_all(&mut workers, LONG).await?;

    let counters = lock_vec(&counters);
    let plain_lost = counters.plain.writes() - counters.plain.value().min(counters.plain.writes());
    let fenced_accepted = counters.fenced.accepted();
    let fenced_value = counters.fenced.value();
    ensure!(
        fenced_value == fenced_accepted,
        "the fenced counter reads {fenced_value} after {fenced_accepted} accepted increments: \
         {} updates lost despite fencing",
        fenced_accepted.abs_diff(fenced_value)
    );
    ensure!(
        stale_refused == ROUNDS,
        "the fenced counter refused only {stale_refused} of {ROUNDS} writes by holders woken after their lease expired"
    );
    Ok(Holds::figure(
        format!(
            "unfenced: {plain_lost} of {} updates lost; fenced: 0 lost",
            counters.plain.writes()
        ),
        format!(
            "{WORKERS} workers, {ROUNDS} holders paused past their TTL ({ttl:?}); without fencing the \
             counter reads {} after {} acknowledged increments; with fencing it reads {fenced_value} \
             after {fenced_accepted} accepted, {} stale writes refused",
            counters.plain.value(),
            counters.plain.writes(),
            counters.fenced.refused()
        ),
    ))
}
