//! Reading a [`Kv`] store's durable state for migration ([`distsync_core::migrate`]).
//!
//! Every key under the namespace is classified by the layouts of this module's
//! recipes (see [`Kind::prefix`]):
//!
//! - a key attached to a lease is a live hold (lock, election, read/write, double-
//!   barrier entry): listed in `active_holds`, not copied;
//! - `<ns>/queue/<name>/i/<%05d>/<%016d>` is a queue item of `<name>` at that
//!   priority; `<ns>/queue/<name>/c/<call id>/<%05d>/<%016d>` an item claimed by a
//!   dequeue call that never handed it over (its consumer died mid-dequeue), exported
//!   as an item at the front of its priority; sequence guards, waiter keys, enqueue
//!   times and enqueues' idempotency records (leased, yet no hold) are skipped;
//! - the etcd backend's `<ns>/amnesia` marker and `<ns>/amnesia-hold` are the store's
//!   own, not carried over;
//! - `<ns>/barrier/<name>` is a held barrier, `<ns>/stm/<name>` an STM key;
//! - `<ns>/counter/<name>` is a counter (its decimal value), `<ns>/latch/<name>` a
//!   latch (`<initial> <remaining>`); a value their recipes did not write is an error,
//!   not a counter silently left behind;
//! - a double barrier's `ready` key is skipped (its entries are live holds).
//!
//! In Go's layout ([`KeyLayout::Go`]) the keys outside the reserved area are read as
//! Go's recipes write them:
//!
//! - `<ns><name>/<%05d>/<%016d>` is an item of queue `<name>` (Go's `PriorityQueue`),
//!   `<ns><name>/<unix nanos>` one of priority 0 (Go's `Queue`, after the others of
//!   priority 0); `<ns>__<name>/<%05d>` guards and `<ns><name>/ready` keys are skipped;
//! - any other key is an STM key, or a held barrier if its value is empty (Go's
//!   barrier key is empty; an empty STM key reads as a barrier).
//!
//! Any other key (another application's, with a shared namespace) is skipped with a
//! warning: give every application its own namespace.

use crate::kv::{Kv, Range};
use distsync_core::error::Result;
use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
use distsync_core::name::Name;

use super::key::{digits, split_reserved, unescape, KeyLayout, KeySpace, Kind};
use super::queue::parse_position;

/// Where a queue item sorts in its queue: priority, in-flight before stored, position.
type Order = (u16, u8, u64);

/// The snapshot of everything under `space`'s namespace.
pub(super) async fn export(kv: &dyn Kv, space: &KeySpace) -> Result<Snapshot> {
    let namespace = space.namespace();
    let go = space.layout() == KeyLayout::Go;
    let everything = kv.range(Range::prefix(namespace)).await?;
    let mut snapshot = Snapshot::default();
    let mut queues: std::collections::BTreeMap<Name, Vec<(Order, QueueItem)>> =
        std::collections::BTreeMap::new();
    for entry in everything.kvs {
        if entry.lease != 0 {
            // An enqueue's idempotency record is leased only to expire: no hold.
            let record = entry
                .key
                .strip_prefix(namespace)
                .and_then(|relative| relative.strip_prefix('/'))
                .is_some_and(|reserved| classify(reserved) == Some(Found::Internal));
            if !record {
                snapshot.active_holds.push(entry.key);
            }
            continue;
        }
        let key = entry.key.as_str();
        let classified = entry.key.strip_prefix(namespace).and_then(|relative| {
            match relative.strip_prefix('/') {
                Some(reserved) => classify(reserved),
                None if go => classify_go(relative, entry.value.is_empty()),
                None => None,
            }
        });
        match classified {
            Some(Found::QueueItem(name, order)) => {
                let item = QueueItem {
                    priority: order.0,
                    item: entry.value,
                };
                queues.entry(name).or_default().push((order, item));
            }
            Some(Found::Barrier(name)) => snapshot.barriers.push(name),
            Some(Found::Stm(name)) => {
                snapshot.stm.insert(name, entry.value);
            }
            Some(Found::Counter(name)) => {
                let value = super::counter::parse(kv.backend(), &name, &entry.value)?;
                snapshot.counters.insert(name, value);
            }
            Some(Found::Latch(name)) => {
                let (initial, remaining) = super::latch::parse(kv.backend(), &name, &entry.value)?;
                let state = LatchState { initial, remaining };
                snapshot.latches.insert(name, state);
            }
            Some(Found::Internal) => {}
            None => tracing::warn!(%key, "export skips a key that is not distsync's"),
        }
    }
    for (name, mut items) in queues {
        items.sort_by_key(|(order, _)| *order);
        let items = items.into_iter().map(|(_, item)| item).collect();
        snapshot.queues.insert(name, items);
    }
    Ok(snapshot)
}

/// What a key of the reserved area is.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    QueueItem(Name, Order),
    Barrier(Name),
    Stm(Name),
    Counter(Name),
    Latch(Name),
    /// Sequence guards, waiter keys, a double barrier's `ready`.
    Internal,
}

/// `(priority, sequence)` of `<%05d>/<%016d>`.
fn position(relative: &str) -> Option<(u16, u64)> {
    let position = parse_position(relative).filter(|position| !position.plain)?;
    Some((position.priority, position.sequence))
}

/// Classifies a key of Go's layout (after `<ns>`, not in the reserved area); `empty`
/// says whether its value is empty.
fn classify_go(relative: &str, empty: bool) -> Option<Found> {
    if let Some(guarded) = relative.strip_prefix("__") {
        let (_, priority) = guarded.rsplit_once('/')?;
        return digits(priority, 5).then_some(Found::Internal);
    }
    if let Some((parent, last)) = relative.rsplit_once('/') {
        if last == "ready" {
            return Some(Found::Internal);
        }
        if digits(last, 19) {
            let name = Name::new(parent).ok()?;
            return Some(Found::QueueItem(name, (0, 2, last.parse().ok()?)));
        }
        if let Some((queue, priority)) = parent.rsplit_once('/') {
            if let Some((priority, sequence)) = position(&format!("{priority}/{last}")) {
                let name = Name::new(queue).ok()?;
                return Some(Found::QueueItem(name, (priority, 1, sequence)));
            }
        }
    }
    let name = Name::new(relative).ok()?;
    Some(if empty {
        Found::Barrier(name)
    } else {
        Found::Stm(name)
    })
}

/// Classifies `<kind>/<escaped name>[/<rest>]` (a key after `<ns>/`).
fn classify(reserved: &str) -> Option<Found> {
    // The etcd backend's marker of the store it has seen, and the hold that makes a
    // new store wait out the sessions of a forgotten one: per store, not carried over.
    if matches!(reserved, "amnesia" | "amnesia-hold") {
        return Some(Found::Internal);
    }
    let (word, rest) = reserved.split_once('/')?;
    if word == super::rate_limiter::WORD {
        // A rate limiter's TAT: time-bound state, not carried over.
        return Some(Found::Internal);
    }
    if matches!(word, "counter" | "latch") {
        // One key per counter or latch, named by its escaped name alone.
        let name = Name::new(unescape(rest)?).ok()?;
        return Some(match word {
            "counter" => Found::Counter(name),
            _ => Found::Latch(name),
        });
    }
    let (kind, name, tail) = split_reserved(reserved)?;
    let name = Name::new(name).ok()?;
    match (kind, tail) {
        (Kind::Barrier, None) => Some(Found::Barrier(name)),
        (Kind::Stm, None) => Some(Found::Stm(name)),
        (Kind::Queue, Some(tail)) => {
            if let Some(item) = tail.strip_prefix("i/") {
                let (priority, sequence) = position(item)?;
                return Some(Found::QueueItem(name, (priority, 1, sequence)));
            }
            if let Some(claim) = tail.strip_prefix("c/") {
                // A claimed item, of Go's plain `Queue` too (priority 0).
                let item = parse_position(claim.split_once('/')?.1)?;
                return Some(Found::QueueItem(name, (item.priority, 0, item.sequence)));
            }
            // Sequence guards, waiters, delivery counters (hold keys are leased),
            // idempotency records.
            (tail.starts_with("s/")
                || tail.starts_with("t/")
                || tail.starts_with("w/")
                || tail.starts_with("d/")
                || tail.starts_with("k/"))
            .then_some(Found::Internal)
        }
        (Kind::DoubleBarrier, Some("ready")) => Some(Found::Internal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, Found};
    use distsync_core::name::Name;

    fn name(name: &str) -> Name {
        Name::new(name).unwrap()
    }

    #[test]
    fn keys_are_recognised_by_their_layout() {
        assert_eq!(
            classify("queue/jobs%2Feu/i/00007/0000000000000003"),
            Some(Found::QueueItem(name("jobs/eu"), (7, 1, 3)))
        );
        assert_eq!(
            classify("queue/jobs/c/0123abcd/00007/0000000000000002"),
            Some(Found::QueueItem(name("jobs"), (7, 0, 2)))
        );
        assert_eq!(classify("queue/jobs/s/00007"), Some(Found::Internal));
        assert_eq!(classify("queue/jobs/w/1700000000"), Some(Found::Internal));
        assert_eq!(
            classify("queue/jobs/t/00007/0000000000000003"),
            Some(Found::Internal)
        );
        assert_eq!(classify("amnesia"), Some(Found::Internal));
        assert_eq!(classify("amnesia-hold"), Some(Found::Internal));
        assert_eq!(classify("barrier/a%2Fb"), Some(Found::Barrier(name("a/b"))));
        assert_eq!(classify("stm/50%25"), Some(Found::Stm(name("50%"))));
        assert_eq!(classify("double-barrier/d/ready"), Some(Found::Internal));
        assert_eq!(
            classify("counter/site%2Fvisits"),
            Some(Found::Counter(name("site/visits")))
        );
        assert_eq!(classify("latch/ready"), Some(Found::Latch(name("ready"))));
        for foreign in [
            "queue/jobs/i/7/0000000000000003",
            "queue/jobs/i/00007/3",
            "queue/jobs/i/99999/0000000000000003",
            "queue/jobs",
            "barrier/a/b",
            "counter/a/b",
            "latch/a%zz",
            "stm/a%zz",
            "registry/pods",
        ] {
            assert_eq!(classify(foreign), None, "{foreign}");
        }
    }
}
