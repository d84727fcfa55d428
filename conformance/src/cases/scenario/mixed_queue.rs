//! Mixed faults on one reliable queue, checked from a history: producers and consumers
//! work on one queue for a bounded time while the seeded partition schedule of
//! [`super::mixed`] cuts them off (silent or reset), one at a time; then the queue is
//! drained and [`crate::queue_history::check`] judges what was recorded, without asking
//! the store anything.
//!
//! - **Producers** ([`PRODUCERS`], each with its own client through its own proxy;
//!   an enqueue needs no session) enqueue unique items and record each call as acknowledged (`Ok`) or
//!   indeterminate (an error or a call given up after [`CALL_LIMIT`]: it may have
//!   applied).
//! - **Consumers** ([`CONSUMERS`], each with its own session through its own proxy, a
//!   new one when it is lost) `receive`, work a short random time while watching
//!   `lost()`, then `ack` (or, one time in five, `nack`), and record each receipt and
//!   how it was settled.
//! - **Drain**: once the clients stop and their sessions are closed, a client that
//!   reaches the store directly receives and acknowledges until every acknowledged
//!   item is out of the queue and the queue stays empty. It gives up when nothing came
//!   for [`DRAIN_LIMIT`] plus two TTLs (an item held by a session whose close did not
//!   reach the store comes back when that session expires), and goes on for as long as
//!   items keep coming, within the case's bound: the backlog a long run leaves on a
//!   store that enqueues faster than it delivers under faults takes longer to drain
//!   than any fixed bound, and an item still queued is not lost.
//!
//! The seed and the run's length come from [`super::mixed::SEED_VAR`] and
//! [`super::mixed::SECS_VAR`], as for the other mixed-fault cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Delivery, Error, Name, Queue, Session, SessionOptions};
use tokio::time::Instant;

use super::mixed::{self, SECS_VAR, SEED_VAR};
use crate::check::{lock_vec, violated, Bounded, Check, Context, Fail, Holds, Task, PROMPT};
use crate::harness::Harness;
use crate::history::{Kind, Recorder};
use crate::queue_history::{self, Enqueue, Enqueued, Receipt, Settled};
use crate::rng::Rng;

/// Producers, clients `0..PRODUCERS`.
const PRODUCERS: usize = 2;

/// Consumers, the clients after the producers.
const CONSUMERS: usize = 3;

/// The drain's client number (after the consumers).
const DRAINER: usize = PRODUCERS + CONSUMERS;

/// How long one call may take before it is given up.
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// How long a consumer waits in one `receive` before it calls again.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// How long the drain may take beyond two TTLs.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The margin of the quiet tail over two TTLs.
const MARGIN: Duration = Duration::from_secs(1);

/// The longest pause between two enqueues of one producer, in ms.
const MAX_GAP_MS: usize = 60;

/// The longest work on one item, in ms.
const MAX_WORK_MS: usize = 60;

/// What every client records into.
#[derive(Clone)]
struct Log {
    recorder: Recorder,
    enqueues: Arc<Mutex<Vec<Enqueue>>>,
    receipts: Arc<Mutex<Vec<Receipt>>>,
}

/// What a run's settings give every client.
#[derive(Clone)]
struct Run {
    log: Log,
    name: Name,
    stop: Instant,
    ttl: Duration,
}

/// What a client counted.
#[derive(Debug, Default)]
struct Tally {
    errors: usize,
    timeouts: usize,
    acks: usize,
    nacks: usize,
    last_error: Option<String>,
}

impl Tally {
    fn error(&mut self, error: &Error) {
        self.errors += 1;
        self.last_error = Some(error.to_string());
    }

    fn add(&mut self, other: Self) {
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.acks += other.acks;
        self.nacks += other.nacks;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }
}

/// The case body (see the module docs).
pub(crate) async fn run(h: Harness) -> Check {
    let entered = Instant::now();
    let seed = mixed::seed()?;
    let length = mixed::length()?;
    let ttl = h.fault_ttl();
    let quiet_tail = ttl * 2 + MARGIN;
    if length < quiet_tail * 2 {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} leaves no time for faults before its quiet tail of {quiet_tail:?}"
        ));
    }
    if length + ttl * 2 + DRAIN_LIMIT + PROMPT * 3 >= crate::CASE_LIMIT {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} and its drain do not fit in a case run's bound of {:?}",
            crate::CASE_LIMIT
        ));
    }
    // The drain may go on while items keep coming, up to the case's bound less the
    // time the history check and the clean-up are given.
    let drain_cap = entered + crate::CASE_LIMIT - PROMPT * 3;
    run_seeded(&h, seed, length, quiet_tail, drain_cap)
        .await
        .map_err(|fail| match fail {
            Fail::Violated(evidence) => {
                Fail::Violated(format!("seed {seed} ({SEED_VAR}={seed}): {evidence}"))
            }
            other => other,
        })
}

async fn run_seeded(
    h: &Harness,
    seed: u64,
    length: Duration,
    quiet_tail: Duration,
    drain_cap: Instant,
) -> Check {
    let name = h.name("queue").ctx("naming the queue")?;
    let switches = mixed::proxied_clients(h, DRAINER).await?;
    let log = Log {
        recorder: Recorder::new(),
        enqueues: Arc::default(),
        receipts: Arc::default(),
    };
    let started = Instant::now();
    let run = Run {
        log: log.clone(),
        name: name.clone(),
        stop: started + length,
        ttl: h.fault_ttl(),
    };
    let mut schedule = Rng::new(seed);
    let mut clients = Vec::new();
    for (client, switch) in switches.iter().enumerate() {
        let (run, backend) = (run.clone(), switch.backend());
        let rng = Rng::new(schedule.next_u64());
        let task = if client < PRODUCERS {
            Task::spawn(format!("producer {client}"), async move {
                producer(run, client, backend, rng).await
            })
        } else {
            Task::spawn(format!("consumer {client}"), async move {
                consumer(run, client, backend, rng).await
            })
        };
        clients.push(task);
    }
    let partitions = mixed::partition_schedule(
        &log.recorder,
        run.ttl,
        (run.stop - quiet_tail, run.stop),
        &switches,
        Rng::new(schedule.next_u64()),
    )
    .await;
    let mut tally = Tally::default();
    for task in &mut clients {
        let limit = run.stop.saturating_duration_since(Instant::now()) + CALL_LIMIT * 2 + PROMPT;
        tally.add(task.join(limit).await?);
    }
    drop(switches);
    let drained = drain(h, &run, drain_cap).await?;
    tally.add(drained.tally);

    let events = log.recorder.events();
    let enqueues = lock_vec(&log.enqueues).clone();
    let receipts = lock_vec(&log.receipts).clone();
    let verdict = queue_history::check(&enqueues, &receipts, &events);
    if !verdict.violations.is_empty() {
        let text: Vec<String> = verdict
            .violations
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        return violated(format!(
            "{} violations: {}",
            verdict.violations.len(),
            text.join("; ")
        ));
    }
    if verdict.acknowledged == 0 {
        return violated(format!(
            "no enqueue acknowledged in {length:?} (last error: {})",
            tally.last_error.as_deref().unwrap_or("none")
        ));
    }
    Ok(Holds::figure(
        format!(
            "seed {seed}: {} acknowledged enqueues in {}, none lost, 0 violations; {} receipts ({} \
             redeliveries); {} partitions ({} silent); {} left after the run, drained in {}",
            verdict.acknowledged,
            crate::check::secs(length),
            receipts.len(),
            verdict.redelivered,
            partitions.partitions,
            partitions.silent,
            drained.items,
            crate::check::secs(drained.took)
        ),
        format!(
            "{PRODUCERS} producers and {CONSUMERS} consumers through their own proxies, session TTL \
             {:?}; {} indeterminate enqueues ({} of them received); {} acks, {} nacks; {} call \
             errors, {} calls given up after {CALL_LIMIT:?}{}",
            run.ttl,
            verdict.indeterminate,
            verdict.indeterminate_received,
            tally.acks,
            tally.nacks,
            tally.errors,
            tally.timeouts,
            tally
                .last_error
                .as_ref()
                .map_or_else(String::new, |error| format!(" (last: {error})"))
        ),
    ))
}

/// A producer: unique items, one at a time, until the run stops.
async fn producer(
    run: Run,
    client: usize,
    backend: Arc<dyn Backend>,
    mut rng: Rng,
) -> Check<Tally> {
    let queue = backend.queue(run.name.clone()).ctx("opening the queue")?;
    let mut tally = Tally::default();
    let mut sent = 0_usize;
    while Instant::now() < run.stop {
        let item = format!("p{client}-{sent}");
        sent += 1;
        let outcome = match tokio::time::timeout(CALL_LIMIT, queue.enqueue(item.clone())).await {
            Ok(Ok(())) => Enqueued::Acknowledged,
            Ok(Err(error)) => {
                tally.error(&error);
                Enqueued::Indeterminate
            }
            Err(_) => {
                tally.timeouts += 1;
                Enqueued::Indeterminate
            }
        };
        lock_vec(&run.log.enqueues).push(Enqueue { item, outcome });
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_GAP_MS) as u64)).await;
    }
    Ok(tally)
}

/// A consumer: receive, work, settle, until the run stops; a new session whenever its
/// session is lost.
async fn consumer(
    run: Run,
    client: usize,
    backend: Arc<dyn Backend>,
    mut rng: Rng,
) -> Check<Tally> {
    let queue = backend.queue(run.name.clone()).ctx("opening the queue")?;
    let mut tally = Tally::default();
    let mut session: Option<Session> = None;
    while Instant::now() < run.stop {
        let current = match &session {
            Some(session) if !session.is_lost() => session.clone(),
            _ => {
                let options = SessionOptions::with_ttl(run.ttl);
                match tokio::time::timeout(CALL_LIMIT, backend.session(options)).await {
                    Ok(Ok(opened)) => {
                        session = Some(opened.clone());
                        opened
                    }
                    Ok(Err(error)) => {
                        tally.error(&error);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(_) => {
                        tally.timeouts += 1;
                        continue;
                    }
                }
            }
        };
        let invoked = run.log.recorder.record(client, Kind::Invoke);
        match tokio::time::timeout(RECEIVE_WAIT, queue.receive(&current)).await {
            Ok(Ok(delivery)) => {
                let work = Duration::from_millis(5 + rng.below(MAX_WORK_MS) as u64);
                let ack = rng.below(5) != 0;
                let receipt = hold(&run, client, invoked, delivery, work, ack, &mut tally).await;
                lock_vec(&run.log.receipts).push(receipt);
            }
            Ok(Err(error)) => {
                tally.error(&error);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // No item within the wait (or a call cut off): nothing is held.
            Err(_) => {}
        }
    }
    if let Some(session) = session {
        let _ = tokio::time::timeout(PROMPT, session.close()).await;
    }
    Ok(tally)
}

/// Records the receipt of `delivery`, works on it for `work` unless `lost()` comes
/// first, then acknowledges it (`ack`) or returns it.
async fn hold(
    run: &Run,
    client: usize,
    invoked: Duration,
    delivery: Delivery,
    work: Duration,
    ack: bool,
    tally: &mut Tally,
) -> Receipt {
    let recorder = &run.log.recorder;
    let granted = recorder.record(client, Kind::Grant(u64::from(delivery.redeliveries())));
    let item = String::from_utf8_lossy(delivery.item()).into_owned();
    let redeliveries = delivery.redeliveries();
    let lost = delivery.lost();
    let (ended, settled) = tokio::select! {
        // A lost() that has fired ends the delivery, whatever else a late poll finds
        // ready (see the in-process contenders of `super::mixed`).
        biased;
        () = lost => {
            let at = recorder.record(client, Kind::Lost);
            drop(delivery);
            (at, Settled::Lost)
        }
        () = tokio::time::sleep(work) => {
            let at = recorder.record(client, Kind::Release);
            (at, settle(recorder, delivery, ack, tally).await)
        }
    };
    Receipt {
        client,
        item,
        redeliveries,
        invoked,
        granted,
        ended,
        settled,
    }
}

/// Acknowledges or returns `delivery`; how it was settled.
async fn settle(recorder: &Recorder, delivery: Delivery, ack: bool, tally: &mut Tally) -> Settled {
    if !ack {
        tally.nacks += 1;
        match tokio::time::timeout(CALL_LIMIT, delivery.nack()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tally.error(&error),
            Err(_) => tally.timeouts += 1,
        }
        return Settled::Returned;
    }
    match tokio::time::timeout(CALL_LIMIT, delivery.ack()).await {
        Ok(Ok(())) => {
            tally.acks += 1;
            Settled::Acked(recorder.now())
        }
        // The hold was gone: the item is back in the queue.
        Ok(Err(Error::SessionLost)) => Settled::AckRefused,
        Ok(Err(error)) => {
            tally.error(&error);
            Settled::AckUnknown
        }
        Err(_) => {
            tally.timeouts += 1;
            Settled::AckUnknown
        }
    }
}

/// What the drain did.
struct Drained {
    tally: Tally,
    /// Items it received.
    items: usize,
    /// From its start to its end.
    took: Duration,
}

/// Receives and acknowledges, directly, until every acknowledged enqueue is out of the
/// queue and the queue gave nothing for [`RECEIVE_WAIT`]; gives up when nothing came
/// for two TTLs and [`DRAIN_LIMIT`], or at `cap`.
async fn drain(h: &Harness, run: &Run, cap: Instant) -> Check<Drained> {
    let queue: Box<dyn Queue> = h
        .backend()
        .queue(run.name.clone())
        .ctx("opening the queue to drain it")?;
    let open = || {
        h.backend()
            .session(SessionOptions::with_ttl(run.ttl))
            .bounded("opening the drain's session")
    };
    let mut session = open().await?;
    let started = Instant::now();
    let mut items = 0;
    let idle_limit = run.ttl * 2 + DRAIN_LIMIT;
    let mut deadline = (Instant::now() + idle_limit).min(cap);
    let mut tally = Tally::default();
    let recorder = &run.log.recorder;
    let pending =
        || queue_history::pending(&lock_vec(&run.log.enqueues), &lock_vec(&run.log.receipts));
    // One receive at a time, kept across the checks for an empty queue: a receive
    // given up at each check would throw away a slow store's progress (the hold it was
    // taking goes back to the queue) and could leave items queued until the deadline,
    // read as lost.
    'drain: while Instant::now() < deadline {
        let invoked = recorder.record(DRAINER, Kind::Invoke);
        let received = {
            let mut receiving = std::pin::pin!(queue.receive(&session));
            loop {
                tokio::select! {
                    received = &mut receiving => break received,
                    () = tokio::time::sleep(RECEIVE_WAIT) => {
                        if pending() == 0 || Instant::now() >= deadline {
                            break 'drain;
                        }
                    }
                }
            }
        };
        match received {
            Ok(delivery) => {
                let receipt = hold(
                    run,
                    DRAINER,
                    invoked,
                    delivery,
                    Duration::ZERO,
                    true,
                    &mut tally,
                )
                .await;
                lock_vec(&run.log.receipts).push(receipt);
                items += 1;
                deadline = (Instant::now() + idle_limit).min(cap);
            }
            // The drain's own session, which no fault touches, lost on a loaded machine
            // (its renewals late past its short TTL): what it held goes back to the
            // queue, as the contract says, and the drain goes on with a new one.
            Err(Error::SessionLost) => {
                tally.error(&Error::SessionLost);
                session = open().await?;
            }
            Err(error) => return Err(Fail::Violated(format!("draining the queue: {error}"))),
        }
    }
    let _ = tokio::time::timeout(PROMPT, session.close()).await;
    Ok(Drained {
        tally,
        items,
        took: started.elapsed(),
    })
}
