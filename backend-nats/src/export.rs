//! Reading the durable state of the bucket for migration ([`distsync_core::migrate`]).
//!
//! One listing of every kind's keys (the one [`status`](crate::status) reads), each
//! key's last message, read by the layouts of the other modules (see `src/keys.rs`):
//!
//! | state | keys | exported as |
//! |---|---|---|
//! | queue items | `queue.<name>.i.<priority>.<id>` (see `src/queue.rs`) | the queue `<name>`, by priority and then stream sequence (the dequeue order); an item whose delivery record `queue.<name>.d.<id>` is a tombstone was consumed and is skipped |
//! | claimed items | a dequeue's in-flight record `queue.<name>.c.<call id>` | an item of the queue `<name>` at its priority, after that priority's waiting items, in the order of their claims (see below) |
//! | STM keys | `stm.<name>` | the STM key `<name>` (guarded writes write these too) |
//! | barriers | `barrier.<name>` | a held barrier `<name>` |
//! | counters | `counter.<name>` (decimal) | the counter `<name>` |
//! | latches | `latch.<name>` (`<initial> <remaining>`) | the latch `<name>` |
//! | live holds | every contender key `<kind>.<name>.q.<...>`: holders and waiters of locks, elections, semaphores, read-write locks and double barriers, an unfair lock's holder and wait line, and receivers' holds of queue items | `active_holds`: their keys |
//!
//! Tombstones (a release's purge, a TTL's delete marker) are no state. Everything else
//! is bookkeeping and is not exported: sessions' keys, a queue's priority keys,
//! delivery records and `enqueue_once` records, a double barrier's ready key, a
//! proclaim's own key (its value is on the leader's key, a live hold), STM scratch
//! compares.
//!
//! **Received items are exported.** An item a receiver holds and has not acknowledged
//! is still the queue's (a `nack` or the end of the receiver's session puts it back at
//! its place), so it is exported at its place, as the other backends do; its hold is
//! a live hold, which refuses the migration unless forced.
//!
//! **Claimed items are exported as items.** A dequeue moves its item into an
//! in-flight record `queue.<name>.c.<call id>` and purges the record once its call
//! has the item (see `src/queue.rs`). On a quiesced source a record left there
//! belongs to a dequeuer that died between the two, and the source itself delivers
//! its item again: any consumer of the queue puts the record back as an item once it
//! is older than the URL's `stale_claim=`. Leaving it out would lose on migration an
//! item the source would have delivered, so the export lists it where that put-back
//! puts it: at its priority (that of the item key the record names), written anew
//! behind the items of that priority that wait, several such items in the order a
//! sweep puts them back (see `src/queue.rs`, "Dequeue"), by their records' stream
//! sequences. It is listed once: the claim's batch purges the item key and writes
//! the record, and the put-back's batch writes the item and purges the record, so
//! an item is never live both as an item and in a record. An info log says how many
//! claimed items were exported. A record no claim wrote (it names no item key) is
//! one no put-back restores either, so it is not exported and a warning names it.
//! Exporting a claim of a live dequeue would copy an item its caller is about to get:
//! a live source must not be migrated, as for every other item.
//!
//! **Consistency.** A bucket of no more keys than one batched direct get returns is
//! read as of one stream sequence; a larger one is read in pages (see `src/scan.rs`),
//! each key as it was at some moment of the walk. On a quiesced source, which is what
//! migration is for and what the refusal on `active_holds` guards, the two agree.

use std::collections::{BTreeMap, HashMap};

use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
use distsync_core::{Error, Name, Result};

use crate::counter::{parse_counter, parse_latch};
use crate::keys::{self, Kind};
use crate::queue::{claimed_from, delivery_key, id_of, is_in_flight_record, item_place};
use crate::shared::Shared;
use crate::store::Entry;
use crate::BACKEND;

/// A queue item at its place: priority, then whether it is a claimed item (which a
/// put-back writes anew, behind the items waiting at its priority), then stream
/// sequence: the item's own, or a claimed item's record's, in which order a sweep puts
/// claimed items back.
type Placed = (u16, bool, u64, bytes::Bytes);

/// Reads the snapshot of the bucket.
pub(crate) async fn export(shared: &Shared) -> Result<Snapshot> {
    let (entries, _) = shared.store.list(&Kind::every_key()).await?;
    // Consumed items: those whose delivery record is a tombstone (an ack or a
    // dequeue's claim purges the record with the item, or before it).
    let consumed: HashMap<&str, bool> = entries
        .iter()
        .map(|entry| (entry.key.as_str(), !entry.live()))
        .collect();
    let mut snapshot = Snapshot::default();
    let mut queues: BTreeMap<Name, Vec<Placed>> = BTreeMap::new();
    let mut claimed = 0_usize;
    let mut unplaced = Vec::new();
    for entry in entries.iter().filter(|entry| entry.live()) {
        let Some(kind) = Kind::of(&entry.key) else {
            continue;
        };
        if keys::is_contender(&entry.key) {
            snapshot.active_holds.push(entry.key.clone());
            continue;
        }
        match kind {
            Kind::Queue => {
                if is_in_flight_record(&entry.key) {
                    // Where the put-back writes the item: the item key it was claimed from.
                    let place =
                        claimed_from(entry).and_then(|item| Some((item, item_place(item)?)));
                    let Some((item, (_, priority))) = place else {
                        unplaced.push(entry.key.as_str());
                        continue;
                    };
                    let name = keys::name_of(item)
                        .and_then(|name| Name::new(name).ok())
                        .ok_or_else(|| malformed(entry, "a claim of a distsync queue's item"))?;
                    queues.entry(name).or_default().push((
                        priority,
                        true,
                        entry.seq,
                        entry.value.clone(),
                    ));
                    claimed += 1;
                    continue;
                }
                let Some((root, priority)) = item_place(&entry.key) else {
                    continue;
                };
                let record = delivery_key(root, id_of(&entry.key));
                if consumed.get(record.as_str()).copied().unwrap_or(false) {
                    continue;
                }
                queues.entry(name_of(entry)?).or_default().push((
                    priority,
                    false,
                    entry.seq,
                    entry.value.clone(),
                ));
            }
            Kind::Stm if is_one_key(entry) => {
                snapshot.stm.insert(name_of(entry)?, entry.value.clone());
            }
            Kind::Barrier if is_one_key(entry) => snapshot.barriers.push(name_of(entry)?),
            Kind::Counter if is_one_key(entry) => {
                let value = parse_counter(&entry.value)
                    .ok_or_else(|| malformed(entry, "a counter (an i64 in decimal)"))?;
                snapshot.counters.insert(name_of(entry)?, value);
            }
            Kind::Latch if is_one_key(entry) => {
                let (initial, remaining) = parse_latch(&entry.value)
                    .filter(|(initial, remaining)| remaining <= initial)
                    .ok_or_else(|| malformed(entry, "a latch (`<initial> <remaining>`)"))?;
                snapshot
                    .latches
                    .insert(name_of(entry)?, LatchState { initial, remaining });
            }
            // A limiter's state is bound to time: migration copies none, on any backend.
            Kind::RateLimit => {}
            _ => {}
        }
    }
    if claimed > 0 {
        tracing::info!(
            count = claimed,
            "exported the items of dequeue calls' in-flight records as queue items, \
             where a put-back puts them: their dequeuers died before handing them over, \
             and the source delivers them again once their records are stale"
        );
    }
    if !unplaced.is_empty() {
        tracing::warn!(
            count = unplaced.len(),
            records = ?unplaced,
            "in-flight records that name no item key are not exported: no claim wrote \
             them and no put-back restores them"
        );
    }
    for (name, mut placed) in queues {
        placed.sort_unstable_by_key(|(priority, claimed, seq, _)| (*priority, *claimed, *seq));
        let items = placed
            .into_iter()
            .map(|(priority, _, _, item)| QueueItem { priority, item })
            .collect();
        snapshot.queues.insert(name, items);
    }
    snapshot.barriers.sort();
    snapshot.active_holds.sort();
    Ok(snapshot)
}

/// Whether `entry` is the one key of a one-key primitive (`<kind>.<name>`), not a
/// longer key of its kind.
fn is_one_key(entry: &Entry) -> bool {
    keys::parts(&entry.key).is_some_and(|parts| parts.rest.is_empty())
}

/// The name `entry`'s key belongs to.
///
/// # Errors
/// [`Error::Backend`] for a key whose name token no distsync name escapes to: a key
/// another writer put in the bucket, which the export cannot place.
fn name_of(entry: &Entry) -> Result<Name> {
    keys::name_of(&entry.key)
        .and_then(|name| Name::new(name).ok())
        .ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("{} does not name a distsync primitive", entry.key),
            )
        })
}

/// The error of a key that does not hold `what`.
fn malformed(entry: &Entry, what: &str) -> Error {
    Error::backend(BACKEND, format!("{} does not hold {what}", entry.key))
}
