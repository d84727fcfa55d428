//! Copying the durable state of one backend into another.
//!
//! Durable state is what outlives every session: queue items (with their priorities,
//! in dequeue order), STM keys, held barriers, counters and count-down latches. Locks,
//! leadership, read/write holds and double-barrier entries belong to live sessions and
//! are not copied; a source that still has some is refused unless forced, since its
//! owners would keep working against the old store. Rate limiters are not copied
//! either: their state is a due time on the source's clock that lapses within one
//! window, so a fresh limiter on the destination grants what the old one would have
//! within that window. The counters that distsync keeps for its own protocols (release
//! requests, lock-delay records, leadership hand-over records) hold fencing tokens,
//! terms and times of the source store's sessions; they mean nothing on another store
//! and are not copied.
//!
//! A queue's items include those an at-most-once `dequeue` claimed and never handed
//! over (its consumer died in between): the source puts such an item back once its
//! claim is stale ([`STALE_CLAIM`](crate::queue::STALE_CLAIM)), so every backend's
//! export lists it as an item, where that put-back puts it. Dropping it would lose an
//! item the source still owed (docs/MIGRATING.md, "Claims left by a dequeue").
//!
//! [`migrate`] copies (the source is left as it was), appending each queue's items to
//! the destination queue of the same name in the source's dequeue order, writing STM
//! keys in transactions, setting counters, counting latches down and holding the same
//! barriers; then it exports the destination again and verifies that every queue ends
//! with the copied items, in order, and that every key, barrier, counter and latch
//! arrived.
//!
//! # Counters and latches already in the destination
//!
//! Unlike a queue, a counter or a latch cannot be appended to, so [`migrate`] decides
//! before writing anything (a dry run included) what each one needs, and refuses with
//! [`Error::MigrationMismatch`] what it cannot copy without losing a value:
//!
//! - a **counter** absent or at 0 in the destination is set to the source's value
//!   (by a compare-and-set from 0, so a writer racing the copy is caught); one
//!   already at the source's value is left; one at any other value is a mismatch,
//!   since adding would double-count and overwriting would lose the destination's.
//! - a **latch** absent from the destination is made with the source's initial count
//!   and counted down to the source's remaining count (an open latch is recreated
//!   open, so the destination's waiters pass). One with the same initial count and a
//!   remaining count at or above the source's is counted down to it: a latch only
//!   moves down, so this loses nothing and lets an interrupted copy be run again. One
//!   with another initial count, or nearer to open than the source's, is a mismatch
//!   (a count-down cannot be undone). Each count-down is one request: a latch of a
//!   large initial count takes as many to recreate.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use distsync::store::{migrate, MigrateOptions};
//! use distsync::store::memory::MemoryBackend;
//! use distsync::Coordinator;
//! let (from, to) = (Coordinator::new(MemoryBackend::new()), Coordinator::new(MemoryBackend::new()));
//! from.queue("jobs")?.enqueue_with_priority("urgent", 0).await?;
//! from.counter("site/visits")?.add(41).await?;
//! from.latch("deploy/ready", 3)?.count_down().await?;
//! let report = migrate(&**from.backend(), &**to.backend(), &MigrateOptions::default()).await?;
//! assert_eq!((report.queue_items, report.counters, report.latches), (1, 1, 1));
//! assert_eq!(to.queue("jobs")?.dequeue().await?, "urgent");
//! assert_eq!(to.counter("site/visits")?.get().await?, 41);
//! assert_eq!(to.latch("deploy/ready", 3)?.count().await?, 2);
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::name::Name;
pub use crate::snapshot::{LatchState, QueueItem, Snapshot};
use crate::stm::Isolation;

/// How [`migrate`] runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Export and report only; write nothing.
    pub dry_run: bool,
    /// Copy even while the source has active holds.
    pub force: bool,
}

/// What [`migrate`] copied (or, in a dry run, would copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Queues copied.
    pub queues: usize,
    /// Queue items copied.
    pub queue_items: usize,
    /// STM keys copied.
    pub stm_keys: usize,
    /// Barriers held in the destination.
    pub barriers: usize,
    /// Counters copied (or found at the source's value already), distsync's own
    /// protocol counters aside.
    pub counters: usize,
    /// Count-down latches copied (or found in the source's state already).
    pub latches: usize,
    /// Live holds found in the source (not copied).
    pub active_holds: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// STM keys written per transaction.
const STM_BATCH: usize = 64;

/// Copies the durable state of `from` into `to` and verifies it arrived.
///
/// # Errors
/// [`Error::ActiveHolders`] when the source has live holds and `force` is off;
/// [`Error::TooLarge`], before anything is written, for a queue item or STM value
/// larger than the destination takes
/// ([`max_value_size`](crate::Capabilities::max_value_size));
/// [`Error::Unsupported`], before anything is written (a dry run included), when either
/// backend cannot export or the destination lacks a primitive the source holds state
/// of; the stores' errors; and
/// [`Error::MigrationMismatch`] naming what differs if the verification fails, or,
/// before anything is written, naming a counter or latch of the destination that
/// cannot take the source's (see the [module docs](self)).
///
/// # Cancel safety
///
/// Not cancel safe: a dropped future may leave part of the state copied. Re-running
/// appends the queues again; check the destination first.
pub async fn migrate(
    from: &dyn Backend,
    to: &dyn Backend,
    options: &MigrateOptions,
) -> Result<MigrationReport> {
    let mut source = from.export().await?;
    source.counters.retain(|name, _| !is_protocol_counter(name));
    let report = MigrationReport {
        queues: source.queues.len(),
        queue_items: source.queue_items(),
        stm_keys: source.stm.len(),
        barriers: source.barriers.len(),
        counters: source.counters.len(),
        latches: source.latches.len(),
        active_holds: source.active_holds.len(),
        dry_run: options.dry_run,
    };
    if !source.active_holds.is_empty() && !options.force {
        return Err(Error::ActiveHolders {
            count: source.active_holds.len(),
            example: source.active_holds[0].clone(),
        });
    }
    // A value the destination does not take is refused before anything is written.
    let limit = to.capabilities();
    for item in source.queues.values().flatten() {
        limit.check_value_size("queue item", item.item.len())?;
    }
    for value in source.stm.values() {
        limit.check_value_size("stm value", value.len())?;
    }
    let before = to.export().await?;
    let plan = plan(&source, &before)?;
    // Every handle is made before anything is written (their factories do no I/O),
    // so a destination that lacks a primitive the source holds refuses before the
    // copy starts, a dry run included.
    let queues = source
        .queues
        .iter()
        .map(|(name, items)| Ok((to.queue(name.clone())?, items)))
        .collect::<Result<Vec<_>>>()?;
    let stm = (!source.stm.is_empty()).then(|| to.stm()).transpose()?;
    let barriers = source
        .barriers
        .iter()
        .map(|name| to.barrier(name.clone()))
        .collect::<Result<Vec<_>>>()?;
    let counters = plan
        .counters
        .iter()
        .map(|(name, value)| Ok((to.counter(name.clone())?, name, *value)))
        .collect::<Result<Vec<_>>>()?;
    let latches = plan
        .latches
        .iter()
        .map(|(name, state, steps)| Ok((to.latch(name.clone(), state.initial)?, *steps)))
        .collect::<Result<Vec<_>>>()?;
    if options.dry_run {
        return Ok(report);
    }
    for (queue, items) in queues {
        for item in items {
            queue
                .enqueue_with_priority(item.item.clone(), item.priority)
                .await?;
        }
    }
    if let Some(stm) = stm {
        let keys: Vec<(&Name, &Bytes)> = source.stm.iter().collect();
        for batch in keys.chunks(STM_BATCH) {
            stm.atomically(Isolation::default(), |tx| async move {
                for (key, value) in batch {
                    tx.put(key.as_str(), (*value).clone());
                }
                Ok(())
            })
            .await?;
        }
    }
    for (counter, name, value) in counters {
        if !counter.compare_and_set(0, value).await? {
            return Err(Error::MigrationMismatch(format!(
                "counter {name:?} changed in the destination while it was copied"
            )));
        }
    }
    for (latch, steps) in latches {
        for _ in 0..steps {
            latch.count_down().await?;
        }
    }
    for barrier in barriers {
        barrier.hold().await?;
    }
    verify(&source, &before, &to.export().await?)?;
    tracing::info!(?report, "migration copied and verified");
    Ok(report)
}

/// Whether `name` is a counter of distsync's own protocols, tied to the source store's
/// sessions, tokens and terms (see the [module docs](self)).
fn is_protocol_counter(name: &Name) -> bool {
    let name = name.as_str();
    crate::revocation::is_reserved(name)
        || crate::lock_delay::is_reserved(name)
        || crate::hand_over_record::is_reserved(name)
}

/// The writes that bring the destination's counters and latches to the source's.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Counters to set from 0 to the value.
    counters: Vec<(Name, i64)>,
    /// Latches to count down, with their state in the source and how many times.
    latches: Vec<(Name, LatchState, u64)>,
}

/// What copying `source`'s counters and latches into a destination holding `before`
/// writes (see the [module docs](self) for the rules).
///
/// # Errors
/// [`Error::MigrationMismatch`] naming the first counter or latch that cannot take
/// the source's state.
fn plan(source: &Snapshot, before: &Snapshot) -> Result<Plan> {
    let mut plan = Plan::default();
    for (name, &value) in &source.counters {
        match before.counters.get(name).copied().unwrap_or(0) {
            found if found == value => {}
            0 => plan.counters.push((name.clone(), value)),
            found => {
                return Err(Error::MigrationMismatch(format!(
                    "counter {name:?} is {found} in the destination and {value} in the source; \
                     set it to 0 there (or pick another destination) and migrate again"
                )));
            }
        }
    }
    for (name, &state) in &source.latches {
        let found = before.latches.get(name).copied().unwrap_or(LatchState {
            initial: state.initial,
            remaining: state.initial,
        });
        if found.initial != state.initial || found.remaining < state.remaining {
            return Err(Error::MigrationMismatch(format!(
                "latch {name:?} has {} of {} left in the destination and {} of {} in the \
                 source; a count-down cannot be undone: pick another destination",
                found.remaining, found.initial, state.remaining, state.initial
            )));
        }
        if found.remaining > state.remaining {
            plan.latches
                .push((name.clone(), state, found.remaining - state.remaining));
        }
    }
    Ok(plan)
}

/// Checks that `after` (the destination now) is `before` plus `source`.
fn verify(source: &Snapshot, before: &Snapshot, after: &Snapshot) -> Result<()> {
    let mismatch = |what: String| Err(Error::MigrationMismatch(what));
    for (name, items) in &source.queues {
        let had = before.queues.get(name).map_or(0, Vec::len);
        let has = after
            .queues
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if has.len() != had + items.len() {
            return mismatch(format!(
                "queue {name:?} holds {} items, expected {} + {}",
                has.len(),
                had,
                items.len()
            ));
        }
        // Within each priority, the destination holds what it had, then the copies.
        for priority in items.iter().map(|item| item.priority) {
            let expected: Vec<&Bytes> = before
                .queues
                .get(name)
                .into_iter()
                .flatten()
                .chain(items)
                .filter(|item| item.priority == priority)
                .map(|item| &item.item)
                .collect();
            let found: Vec<&Bytes> = has
                .iter()
                .filter(|item| item.priority == priority)
                .map(|item| &item.item)
                .collect();
            if found != expected {
                return mismatch(format!(
                    "queue {name:?} priority {priority}: order differs from the source"
                ));
            }
        }
    }
    for (key, value) in &source.stm {
        if after.stm.get(key) != Some(value) {
            return mismatch(format!("stm key {key:?} did not arrive"));
        }
    }
    for name in &source.barriers {
        if !after.barriers.contains(name) {
            return mismatch(format!("barrier {name:?} is not held"));
        }
    }
    for (name, value) in &source.counters {
        let found = after.counters.get(name).copied().unwrap_or(0);
        if found != *value {
            return mismatch(format!("counter {name:?} is {found}, expected {value}"));
        }
    }
    for (name, state) in &source.latches {
        // A latch never counted down is not stored, and reads as its initial count.
        let arrived = match after.latches.get(name) {
            Some(found) => found == state,
            None => state.remaining == state.initial,
        };
        if !arrived {
            return mismatch(format!(
                "latch {name:?} did not arrive with {} of {} left",
                state.remaining, state.initial
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str) -> Name {
        Name::new(name).unwrap()
    }

    fn latch(initial: u64, remaining: u64) -> LatchState {
        LatchState { initial, remaining }
    }

    #[test]
    fn a_counter_is_set_only_where_the_destination_has_none_or_the_same() {
        let mut source = Snapshot::default();
        source.counters.insert(name("new"), 41);
        source.counters.insert(name("zero"), 7);
        source.counters.insert(name("same"), -3);
        let mut before = Snapshot::default();
        before.counters.insert(name("zero"), 0);
        before.counters.insert(name("same"), -3);
        let planned = plan(&source, &before).unwrap();
        assert_eq!(planned.counters, [(name("new"), 41), (name("zero"), 7)]);

        before.counters.insert(name("new"), 40);
        let error = plan(&source, &before).unwrap_err();
        assert!(matches!(&error, Error::MigrationMismatch(why) if why.contains("\"new\"")));
        // A source counter at 0 against a destination that moved on is refused too.
        let mut source = Snapshot::default();
        source.counters.insert(name("c"), 0);
        let mut before = Snapshot::default();
        before.counters.insert(name("c"), 5);
        assert!(matches!(
            plan(&source, &before),
            Err(Error::MigrationMismatch(_))
        ));
    }

    #[test]
    fn a_latch_is_counted_down_to_the_source_and_never_up() {
        let mut source = Snapshot::default();
        source.latches.insert(name("fresh"), latch(3, 1));
        source.latches.insert(name("open"), latch(2, 0));
        source.latches.insert(name("resumed"), latch(5, 2));
        source.latches.insert(name("same"), latch(4, 4));
        let mut before = Snapshot::default();
        before.latches.insert(name("resumed"), latch(5, 4));
        let planned = plan(&source, &before).unwrap();
        assert_eq!(
            planned.latches,
            [
                (name("fresh"), latch(3, 1), 2),
                (name("open"), latch(2, 0), 2),
                (name("resumed"), latch(5, 2), 2),
            ]
        );
        for refused in [latch(6, 4), latch(5, 1), latch(5, 0)] {
            before.latches.insert(name("resumed"), refused);
            assert!(
                matches!(plan(&source, &before), Err(Error::MigrationMismatch(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn verification_finds_a_counter_or_latch_that_did_not_arrive() {
        let mut source = Snapshot::default();
        source.counters.insert(name("c"), 2);
        source.latches.insert(name("l"), latch(2, 1));
        source.latches.insert(name("untouched"), latch(2, 2));
        let mut after = Snapshot::default();
        assert!(verify(&source, &Snapshot::default(), &after).is_err());
        after.counters.insert(name("c"), 2);
        assert!(verify(&source, &Snapshot::default(), &after).is_err());
        after.latches.insert(name("l"), latch(2, 1));
        assert!(verify(&source, &Snapshot::default(), &after).is_ok());
        after.counters.insert(name("c"), 3);
        assert!(verify(&source, &Snapshot::default(), &after).is_err());
    }

    #[test]
    fn protocol_counters_are_recognised() {
        assert!(is_protocol_counter(&name(&format!(
            "jobs/{}",
            crate::revocation::REQUEST_SEGMENT
        ))));
        assert!(is_protocol_counter(&name(&format!(
            "jobs/{}",
            crate::lock_delay::RECORD_SEGMENT
        ))));
        assert!(!is_protocol_counter(&name("jobs/visits")));
    }
}
