//! Migration cases: [`distsync_core::migrate::migrate`] copies a store's durable state
//! (queue items with their priorities, STM keys, a held barrier, a counter, a
//! count-down latch) into the store under test and back out of it, verified and read
//! back through the public API; a destination cut off partway through the copy (reset,
//! then silent, then during the verification) makes it fail loudly, never report a
//! verified copy, and leaves the source as it was; a source with a live hold is refused
//! with [`Error::ActiveHolders`] before anything is written.
//!
//! An export reads a whole store, other cases' state and live holds included, so each
//! case runs on a store of its own ([`Hook::FreshStore`]: a private server, or a new
//! in-process memory store), and the other side of each migration is a new in-process
//! memory store.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use distsync_core::migrate::{migrate, LatchState, MigrateOptions, MigrationReport, Snapshot};
use distsync_core::{Backend, Bytes, Error, Isolation, Name, Result};
use distsync_kv::memory::MemoryBackend;
use tokio::time::Instant;

use super::boxed;
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, eventually, partitioned_client_with_timeouts, retry_transient, secs, set_up, violated,
    within, Bounded, Check, Context, Fail, Holds, LONG, PROMPT,
};
use crate::faults::{FreshStore, Hook, PartitionMode};
use crate::harness::Harness;

mod tap;

use tap::{CutPoint, CutTap};

/// What every migration case needs: an export, and each kind of durable state.
const NEEDS: &[Need] = &[
    Need::Export,
    Need::Queue,
    Need::PriorityQueue,
    Need::Stm(Isolation::SerializableSnapshot),
    Need::Barrier,
    Need::Counter,
    Need::Latch,
];

/// The migration cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "migrate_copies_and_verifies",
        group: Group::Migrate,
        guarantee: "migrate from memory into the store and from the store back out: verified, \
                    every item in priority order, every key, the counter, the latch and the \
                    held barrier read back through the API; the source unchanged",
        needs: NEEDS,
        claim: Claim::Offered,
        hooks: &[Hook::FreshStore],
        run: |h| boxed(copies_and_verifies(h)),
    },
    Case {
        id: "migrate_cut_destination_fails_loudly",
        group: Group::Migrate,
        guarantee: "the destination cut off partway through the copy (reset, silent, or during \
                    the verification): migrate fails within 30 s, never reports verified, the \
                    source is unchanged; after the heal a second run verifies",
        needs: NEEDS,
        claim: Claim::Offered,
        hooks: &[Hook::FreshStore, Hook::Partition],
        run: |h| boxed(cut_destination_fails_loudly(h)),
    },
    Case {
        id: "migrate_refuses_live_holds",
        group: Group::Migrate,
        guarantee: "a source with a live lock holder is refused (ActiveHolders) and nothing is \
                    written to the destination; once released, the copy runs",
        needs: &[
            Need::Export,
            Need::Lock,
            Need::Queue,
            Need::PriorityQueue,
            Need::Stm(Isolation::SerializableSnapshot),
            Need::Barrier,
            Need::Counter,
            Need::Latch,
        ],
        claim: Claim::Offered,
        hooks: &[Hook::FreshStore],
        run: |h| boxed(refuses_live_holds(h)),
    },
];

/// Queue items of the copies (the cut case cuts after [`CUT_AFTER`] of them).
const ITEMS: usize = 24;

/// How many items the cut case lets through before it cuts the destination.
const CUT_AFTER: usize = 5;

/// The bound on a migration into a destination cut off: requests time out after
/// [`REQUEST_TIMEOUT`], and the backends' one-shot retries stop within 3 s.
const CUT_BOUND: Duration = Duration::from_secs(30);

/// The request and connect timeouts of the client cut off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The state a case writes into a source, and what its export must read.
struct Seed {
    queue: Name,
    /// The items in dequeue order, each with its priority.
    items: Vec<(u16, Bytes)>,
    stm: Vec<(Name, Bytes)>,
    barrier: Name,
    counter: Name,
    counter_value: i64,
    latch: Name,
    latch_state: LatchState,
}

impl Seed {
    /// The state under `h`'s prefix, with `items` queue items of three priorities.
    fn new(h: &Harness, items: usize) -> Check<Self> {
        let name = |suffix: &str| h.name(suffix).ctx("naming the migrated state");
        // Written in this order; dequeued by priority (lower first), FIFO within one.
        let written: Vec<(u16, Bytes)> = (0..items)
            .map(|i| ([7u16, 0, 300][i % 3], Bytes::from(format!("item-{i:03}"))))
            .collect();
        let mut items = written;
        items.sort_by_key(|(priority, _)| *priority);
        Ok(Self {
            queue: name("jobs")?,
            items,
            stm: vec![
                (name("stm/alpha")?, Bytes::from_static(b"1")),
                (name("stm/beta")?, Bytes::from_static(b"two words")),
                // Not UTF-8: a store must carry bytes, not text.
                (name("stm/raw")?, Bytes::from_static(&[0, 255, 10, 13])),
            ],
            barrier: name("gate")?,
            counter: name("visits")?,
            counter_value: 41,
            latch: name("ready")?,
            latch_state: LatchState {
                initial: 3,
                remaining: 2,
            },
        })
    }

    /// The order the items are enqueued in: interleaved priorities, so that the
    /// destination must sort them as the source did.
    fn written(&self) -> Vec<(u16, Bytes)> {
        let mut written = self.items.clone();
        written.sort_by_key(|(_, item)| item.clone());
        written
    }

    /// Writes the state into `backend` through the public API.
    async fn write(&self, backend: &dyn Backend, store: &str) -> Check<()> {
        let doing = |what: &str| format!("writing {what} into the {store}");
        let queue = backend.queue(self.queue.clone()).ctx(doing("the queue"))?;
        for (priority, item) in self.written() {
            queue
                .enqueue_with_priority(item, priority)
                .bounded(doing("a queue item"))
                .await?;
        }
        let stm = backend.stm().ctx(doing("the STM keys"))?;
        let keys = self.stm.clone();
        stm.atomically(Isolation::default(), |tx| {
            let keys = keys.clone();
            async move {
                for (key, value) in keys {
                    tx.put(key.as_str(), value);
                }
                Ok(())
            }
        })
        .bounded(doing("the STM keys"))
        .await?;
        backend
            .barrier(self.barrier.clone())
            .ctx(doing("the barrier"))?
            .hold()
            .bounded(doing("the barrier"))
            .await?;
        backend
            .counter(self.counter.clone())
            .ctx(doing("the counter"))?
            .add(self.counter_value)
            .bounded(doing("the counter"))
            .await?;
        let latch = backend
            .latch(self.latch.clone(), self.latch_state.initial)
            .ctx(doing("the latch"))?;
        for _ in self.latch_state.remaining..self.latch_state.initial {
            latch.count_down().bounded(doing("the latch")).await?;
        }
        Ok(())
    }

    /// What an export of a store holding exactly this state reads.
    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.queues.insert(
            self.queue.clone(),
            self.items
                .iter()
                .map(|(priority, item)| queue_item(*priority, item.clone()))
                .collect(),
        );
        snapshot.stm.extend(self.stm.iter().cloned());
        snapshot.barriers.push(self.barrier.clone());
        snapshot
            .counters
            .insert(self.counter.clone(), self.counter_value);
        snapshot
            .latches
            .insert(self.latch.clone(), self.latch_state);
        snapshot
    }

    /// Reads the state back from `backend` through the public API (the queue is
    /// dequeued, so this comes last): every item in dequeue order and no more, every
    /// key, the counter, the latch, and the barrier still held.
    async fn read_back(&self, h: &Harness, backend: &dyn Backend, store: &str) -> Check<()> {
        let doing = |what: &str| format!("reading {what} back from the {store}");
        let queue = backend.queue(self.queue.clone()).ctx(doing("the queue"))?;
        for (n, (priority, expected)) in self.items.iter().enumerate() {
            let found = queue.try_dequeue().bounded(doing("a queue item")).await?;
            ensure!(
                found.as_ref() == Some(expected),
                "the {store}'s queue gave {found:?} as item {n}, expected {expected:?} (priority \
                 {priority})"
            );
        }
        let extra = queue
            .try_dequeue()
            .bounded(doing("the queue's end"))
            .await?;
        ensure!(
            extra.is_none(),
            "the {store}'s queue holds an item that was never copied: {extra:?}"
        );
        let stm = backend.stm().ctx(doing("the STM keys"))?;
        for (key, expected) in &self.stm {
            let key = key.clone();
            let found = stm
                .atomically(Isolation::default(), |tx| {
                    let key = key.clone();
                    async move { tx.get(key.as_str()).await }
                })
                .bounded(doing("an STM key"))
                .await?;
            ensure!(
                found.as_ref() == Some(expected),
                "the {store}'s STM key {key} reads {found:?}, expected {expected:?}"
            );
        }
        let counter = backend
            .counter(self.counter.clone())
            .ctx(doing("the counter"))?
            .get()
            .bounded(doing("the counter"))
            .await?;
        ensure!(
            counter == self.counter_value,
            "the {store}'s counter reads {counter}, expected {}",
            self.counter_value
        );
        let latch = backend
            .latch(self.latch.clone(), self.latch_state.initial)
            .ctx(doing("the latch"))?
            .count()
            .bounded(doing("the latch"))
            .await?;
        ensure!(
            latch == self.latch_state.remaining,
            "the {store}'s latch has {latch} left, expected {}",
            self.latch_state.remaining
        );
        let barrier = backend
            .barrier(self.barrier.clone())
            .ctx(doing("the barrier"))?;
        match distsync_core::timeout(h.settle(), barrier.wait()).await {
            Err(Error::Timeout(_)) => Ok(()),
            Ok(()) => violated(format!(
                "the {store}'s barrier {} is not held: a wait returned at once",
                self.barrier
            )),
            Err(error) => Err(error).ctx(doing("the barrier")),
        }
    }
}

/// A queue item of a snapshot.
fn queue_item(priority: u16, item: Bytes) -> distsync_core::migrate::QueueItem {
    distsync_core::migrate::QueueItem { priority, item }
}

/// `snapshot` in a form two stores' exports compare in: barriers and holds sorted.
fn normalized(mut snapshot: Snapshot) -> Snapshot {
    snapshot.barriers.sort();
    snapshot.active_holds.sort();
    snapshot
}

/// Exports `backend` (the `store`), normalized.
async fn export(backend: &dyn Backend, store: &str) -> Check<Snapshot> {
    Ok(normalized(
        within(LONG, format!("exporting the {store}"), backend.export()).await?,
    ))
}

/// Checks that `found` (an export of the `store`) is `expected`, naming the first kind
/// of state that differs.
fn same_state(store: &str, found: &Snapshot, expected: &Snapshot) -> Check<()> {
    ensure!(
        found.queues == expected.queues,
        "the {store} holds the queues {:?}, expected {:?}",
        found.queues,
        expected.queues
    );
    ensure!(
        found.stm == expected.stm,
        "the {store} holds the STM keys {:?}, expected {:?}",
        found.stm,
        expected.stm
    );
    ensure!(
        found.barriers == expected.barriers,
        "the {store} holds the barriers {:?}, expected {:?}",
        found.barriers,
        expected.barriers
    );
    ensure!(
        found.counters == expected.counters,
        "the {store} holds the counters {:?}, expected {:?}",
        found.counters,
        expected.counters
    );
    ensure!(
        found.latches == expected.latches,
        "the {store} holds the latches {:?}, expected {:?}",
        found.latches,
        expected.latches
    );
    ensure!(
        found.active_holds == expected.active_holds,
        "the {store} holds the live holds {:?}, expected {:?}",
        found.active_holds,
        expected.active_holds
    );
    Ok(())
}

/// Checks a verified report of copying `seed`.
fn check_report(report: &MigrationReport, seed: &Seed, direction: &str) -> Check<()> {
    let counts = (
        report.queues,
        report.queue_items,
        report.stm_keys,
        report.barriers,
        report.counters,
        report.latches,
        report.active_holds,
        report.dry_run,
    );
    let expected = (1, seed.items.len(), seed.stm.len(), 1, 1, 1, 0, false);
    ensure!(
        counts == expected,
        "{direction}: the report counts (queues, items, keys, barriers, counters, latches, \
         holds, dry run) {counts:?}, expected {expected:?}"
    );
    Ok(())
}

/// A new, empty store of the harness's kind, and a harness over it for the case `case`.
pub(super) async fn fresh_store(h: &Harness, case: &str) -> Check<(FreshStore, Harness)> {
    let fresh = within(
        LONG,
        "starting a store of the case's own",
        h.faults().fresh_store(h.backend().as_ref()),
    )
    .await?;
    let harness = Harness::new(Arc::clone(fresh.backend()))
        .with_faults(Arc::clone(fresh.faults()))
        .for_case(case);
    Ok((fresh, harness))
}

/// A new in-process memory store: the other side of each migration.
fn memory() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

/// Runs `migrate(from, to)` within [`LONG`].
async fn copy(from: &dyn Backend, to: &dyn Backend, direction: &str) -> Check<MigrationReport> {
    within(
        LONG,
        direction,
        migrate(from, to, &MigrateOptions::default()),
    )
    .await
}

/// Memory into the store, then the store back out into memory: both verified, both
/// exports read the state, the sources unchanged, and the store's state read back
/// through the API.
async fn copies_and_verifies(h: Harness) -> Check {
    let (_fresh, store) = fresh_store(&h, "migrate").await?;
    let seed = Seed::new(&h, ITEMS)?;
    let expected = seed.snapshot();
    let source = memory();
    seed.write(&*source, "memory source").await?;
    same_state(
        "memory source",
        &export(&*source, "memory source").await?,
        &expected,
    )?;

    let started = Instant::now();
    let into = copy(
        &*source,
        &**store.backend(),
        "migrating memory into the store",
    )
    .await?;
    let copied_in = started.elapsed();
    check_report(&into, &seed, "memory into the store")?;
    same_state(
        "store",
        &export(&**store.backend(), "store").await?,
        &expected,
    )?;
    same_state(
        "memory source after the copy",
        &export(&*source, "memory source").await?,
        &expected,
    )?;

    let back = memory();
    let started = Instant::now();
    let out = copy(
        &**store.backend(),
        &*back,
        "migrating the store out into memory",
    )
    .await?;
    let copied_out = started.elapsed();
    check_report(&out, &seed, "the store out into memory")?;
    same_state(
        "memory destination",
        &export(&*back, "memory destination").await?,
        &expected,
    )?;
    same_state(
        "store after being the source",
        &export(&**store.backend(), "store").await?,
        &expected,
    )?;

    seed.read_back(&store, &**store.backend(), "store").await?;
    seed.read_back(&store, &*back, "memory destination").await?;
    Ok(Holds::figure(
        format!("in {}, out {}", secs(copied_in), secs(copied_out)),
        format!(
            "{ITEMS} items of 3 priorities, {} STM keys, a held barrier, a counter and a latch \
             copied from memory into the store and from the store into memory; both reports \
             verified, both exports equal, both sources unchanged, and the store read back \
             through the API in order",
            seed.stm.len()
        ),
    ))
}

/// One cut: the mode, and the step after which it is made.
const CUTS: [(PartitionMode, CutPoint); 3] = [
    (PartitionMode::Reset, CutPoint::AfterItems(CUT_AFTER)),
    (PartitionMode::Silent, CutPoint::AfterItems(CUT_AFTER)),
    (PartitionMode::Reset, CutPoint::AtVerification),
];

/// Each cut of [`CUTS`] on a store of its own.
async fn cut_destination_fails_loudly(h: Harness) -> Check {
    let mut figures = Vec::new();
    for (mode, point) in CUTS {
        let what = format!("{} {}", mode.describe(), point.describe());
        let took = set_up(what, |_| cut_once(&h, mode, point)).await?;
        figures.push(format!(
            "{} {}: {}",
            match mode {
                PartitionMode::Silent => "silent",
                _ => "reset",
            },
            match point {
                CutPoint::AfterItems(_) => "mid-copy",
                CutPoint::AtVerification => "at verification",
            },
            secs(took)
        ));
    }
    Ok(Holds::figure(
        figures.join(", "),
        format!(
            "a migration from memory into a client of the store cut off {} (reset, then \
             silent), and one cut off {}, each failed with an error (never a verified report) \
             within {CUT_BOUND:?}; the source exported the same before and after; what \
             reached the destination was a prefix of the items in order; after the heal and \
             the destination's queue drained, a second migration verified",
            CutPoint::AfterItems(CUT_AFTER).describe(),
            CutPoint::AtVerification.describe(),
        ),
    ))
}

/// Migrates into a client of a fresh store cut off with `mode` at `point`; returns how
/// long after the cut `migrate` failed.
async fn cut_once(h: &Harness, mode: PartitionMode, point: CutPoint) -> Check<Duration> {
    let what = format!("{} {}", mode.describe(), point.describe());
    let (fresh, store) = fresh_store(h, "migrate").await?;
    let seed = Seed::new(h, ITEMS)?;
    let expected = seed.snapshot();
    let source = memory();
    seed.write(&*source, "memory source").await?;
    let before = export(&*source, "memory source").await?;
    let run = CutRun {
        what,
        point,
        seed,
        expected,
        source,
        before,
    };
    let (took, tap, partitioned) = migrate_cut_off(&run, &store, mode).await?;
    heal(&run, &*partitioned, &tap).await?;
    same_state(
        "memory source after the failed copy",
        &export(&*run.source, "memory source").await?,
        &run.before,
    )?;
    let direct = fresh.backend();
    let reached = reached_a_prefix(&run, &**direct).await?;
    drain_and_migrate_again(&run, &**direct, reached).await?;
    Ok(took)
}

/// One cut migration's source, the items it copies and what it is judged by.
struct CutRun {
    /// The cut in words, for the evidence.
    what: String,
    point: CutPoint,
    seed: Seed,
    /// What a whole copy leaves in the destination.
    expected: Snapshot,
    source: Arc<dyn Backend>,
    /// The source's export before the copy.
    before: Snapshot,
}

/// The fault: migrates through a client of `store` that the tap cuts off at the run's
/// point; `migrate` must fail, and within [`CUT_BOUND`]. Returns how long after the
/// cut it failed, the tap and the cut-off client.
async fn migrate_cut_off(
    run: &CutRun,
    store: &Harness,
    mode: PartitionMode,
) -> Check<(Duration, CutTap, Arc<dyn crate::faults::Partitioned>)> {
    let what = &run.what;
    let partitioned: Arc<dyn crate::faults::Partitioned> =
        Arc::from(partitioned_client_with_timeouts(store, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?);
    let tap = CutTap::new(Arc::clone(&partitioned), mode, run.point);
    let started = Instant::now();
    let result = tokio::time::timeout(
        CUT_BOUND,
        migrate(&*run.source, &tap, &MigrateOptions::default()),
    )
    .await;
    let ended = Instant::now();
    let Some(cut_at) = tap.cut_at() else {
        let why = format!(
            "{what}: the cut was never made (migrate returned {result:?} after {})",
            secs(started.elapsed())
        );
        // A store too slow for the client's timeout before anything was cut says
        // nothing of how a cut migration fails: the set-up starts again on a fresh store.
        return match result {
            Ok(Err(error)) if error.is_transient() => Err(Fail::SetUpLapsed(why)),
            _ => violated(why),
        };
    };
    let took = ended.saturating_duration_since(cut_at);
    match result {
        Err(_) => {
            return violated(format!(
                "{what}: migrate did not return within {CUT_BOUND:?} of its start"
            ))
        }
        Ok(Ok(report)) => {
            return violated(format!(
                "{what}: migrate reported a verified copy into a destination cut off: {report:?}"
            ))
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, %what, "migration into a cut destination failed, as it must");
        }
    }
    Ok((took, tap, partitioned))
}

/// Heals the cut, and waits until the destination holds all it ever will of the
/// failed run.
async fn heal(
    run: &CutRun,
    partitioned: &dyn crate::faults::Partitioned,
    tap: &CutTap,
) -> Check<()> {
    let what = &run.what;
    // Bytes a silent partition holds are dropped, not delivered after the heal.
    partitioned.set(PartitionMode::Reset);
    partitioned.set(PartitionMode::Forward);
    // A write in flight at the cut that the cut-off client still holds is sent once it
    // reconnects (it may be applied, as its error said): a read through each queue
    // handle the migration wrote with goes out after it, so once those reads are
    // answered the destination holds all it ever will of the failed run.
    for queue in tap.queues() {
        retry_transient(&AtomicUsize::new(0), LONG, || queue.len())
            .await
            .ctx(format!(
                "{what}: a read through the migration's queue handle after the heal"
            ))?;
    }
    Ok(())
}

/// What reached the destination is a prefix of the items in order (cut mid-copy: the
/// items acknowledged and at most the one in flight, and nothing after them); returns
/// how many items its export holds.
async fn reached_a_prefix(run: &CutRun, direct: &dyn Backend) -> Check<usize> {
    let what = &run.what;
    let partial = export(direct, "destination after the cut").await?;
    let reached = partial
        .queues
        .get(&run.seed.queue)
        .cloned()
        .unwrap_or_default();
    let copied = &run.expected.queues[&run.seed.queue];
    ensure!(
        reached.len() <= copied.len() && reached[..] == copied[..reached.len()],
        "{what}: the destination holds {reached:?}, not a prefix of the items copied in order"
    );
    if let CutPoint::AfterItems(items) = run.point {
        ensure!(
            (items..=items + 1).contains(&reached.len()),
            "{what}: the destination holds {} items after the cut, expected {items} acknowledged \
             (and at most the one in flight)",
            reached.len()
        );
        ensure!(
            partial.stm.is_empty()
                && partial.barriers.is_empty()
                && partial.counters.is_empty()
                && partial.latches.is_empty(),
            "{what}: the copy went on after a failed write: the destination holds {partial:?}"
        );
    }
    Ok(reached.len())
}

/// After the heal, as a user runs the migration again: drain what reached the
/// destination's queue, then copy again, through a client of the store with its own
/// timeouts (the reads of [`heal`] showed the cut-off client answering again; its 1 s
/// request timeout is the cut's, and a loaded machine's store can take longer than
/// that to answer, which says nothing of the migration). Whatever the drain finds is
/// still a prefix of the items copied, with at most the one in flight at the cut.
async fn drain_and_migrate_again(run: &CutRun, direct: &dyn Backend, reached: usize) -> Check<()> {
    let what = &run.what;
    let copied = &run.expected.queues[&run.seed.queue];
    let most = match run.point {
        CutPoint::AfterItems(items) => items + 1,
        CutPoint::AtVerification => copied.len(),
    };
    let queue = direct
        .queue(run.seed.queue.clone())
        .ctx("draining the destination's queue")?;
    let mut drained = Vec::new();
    while let Some(item) = within(
        LONG,
        format!("{what}: draining the destination's queue after the heal"),
        queue.try_dequeue(),
    )
    .await?
    {
        drained.push(item);
        ensure!(
            drained.len() <= most
                && drained
                    .iter()
                    .zip(copied)
                    .all(|(got, sent)| *got == sent.item),
            "{what}: the destination's queue gave {drained:?} after the heal, not a prefix of \
             the items copied in order with at most {most}"
        );
    }
    ensure!(
        drained.len() >= reached,
        "{what}: the destination's queue gave {} items after the heal, fewer than the {} its \
         export held",
        drained.len(),
        reached
    );
    // A dequeue hands its item over first and deletes its in-flight record after, in
    // the background (etcd and memory): until then an export still lists the item.
    eventually(
        PROMPT,
        format!(
            "{what}: the destination's queue empty in its export once {drained:?} were \
             drained"
        ),
        || async {
            let emptied = export(direct, "destination after the drain").await?;
            Ok(emptied.queues.is_empty().then_some(()))
        },
    )
    .await?;
    let again = copy(
        &*run.source,
        direct,
        &format!("{what}: migrating again after the heal"),
    )
    .await?;
    check_report(&again, &run.seed, "the second run after the heal")?;
    same_state(
        "destination after the second run",
        &export(direct, "destination").await?,
        &run.expected,
    )?;
    same_state(
        "memory source after both runs",
        &export(&*run.source, "memory source").await?,
        &run.before,
    )?;
    Ok(())
}

/// A live lock in the source stops the migration before any write: the store as the
/// source with a memory destination, then memory as the source with the store as the
/// destination; once the lock is released, the store's state copies.
async fn refuses_live_holds(h: Harness) -> Check {
    let (_fresh, store) = fresh_store(&h, "migrate").await?;
    let seed = Seed::new(&h, 3)?;
    seed.write(&**store.backend(), "store").await?;
    let lock = h.name("held").ctx("naming the lock")?;
    let session = store
        .fault_session()
        .set_up("opening a session on the store")
        .await?;
    // A store new to the backend may be one that forgot its holds: a backend with a
    // lock-delay (Redis with `max_session_ttl=`) grants only once that bound has passed.
    let guard = within(
        LONG,
        "taking the lock on the store",
        store
            .backend()
            .locker(&session, lock.clone())
            .ctx("making a lock on the store")?
            .lock(),
    )
    .await?;

    let destination = memory();
    let refused = within(
        LONG,
        "migrating the store (a lock held) into memory",
        refusal(&**store.backend(), &*destination),
    )
    .await?;
    let (count, example) = refused?;
    ensure!(
        count >= 1,
        "the store as the source: refused with {count} active holds for a held lock"
    );
    same_state(
        "memory destination of a refused copy",
        &export(&*destination, "memory destination").await?,
        &Snapshot::default(),
    )?;

    // Memory as the source, a lock held there; the store as the destination.
    let source = memory();
    Seed::new(&h, 3)?.write(&*source, "memory source").await?;
    let memory_session = source
        .session(distsync_core::SessionOptions::with_ttl(h.fault_ttl()))
        .bounded("opening a session on the memory source")
        .await?;
    let _memory_guard = source
        .locker(&memory_session, lock.clone())
        .ctx("making a lock on the memory source")?
        .lock()
        .bounded("taking the lock on the memory source")
        .await?;
    let before = export(&**store.backend(), "store").await?;
    let (into_count, _) = within(
        LONG,
        "migrating memory (a lock held) into the store",
        refusal(&*source, &**store.backend()),
    )
    .await??;
    ensure!(
        into_count >= 1,
        "memory as the source: refused with {into_count} active holds for a held lock"
    );
    same_state(
        "store after a refused copy into it",
        &export(&**store.backend(), "store").await?,
        &before,
    )?;

    guard.unlock().bounded("unlocking on the store").await?;
    session
        .close()
        .bounded("closing the store's session")
        .await?;
    let released = memory();
    let report = copy(
        &**store.backend(),
        &*released,
        "migrating the store into memory once the lock is released",
    )
    .await?;
    check_report(&report, &seed, "the store once released")?;
    Ok(Holds::figure(
        format!("{count} hold(s) found"),
        format!(
            "with a lock held, migrating the store into memory and memory into the store were \
             both refused with ActiveHolders (e.g. {example}) and left the destination as it \
             was; after the unlock the store's state copied and verified"
        ),
    ))
}

/// Runs a migration that must be refused for live holds: `Ok` with the count and the
/// example the error names, a violation for any other outcome.
async fn refusal(from: &dyn Backend, to: &dyn Backend) -> Result<Check<(usize, String)>> {
    Ok(match migrate(from, to, &MigrateOptions::default()).await {
        Err(Error::ActiveHolders { count, example }) => Ok((count, example)),
        Ok(report) => Err(Fail::Violated(format!(
            "a source with a live lock was copied: {report:?}"
        ))),
        Err(error) => Err(Fail::Violated(format!(
            "a source with a live lock was refused with another error: {error}"
        ))),
    })
}
