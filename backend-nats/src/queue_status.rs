//! The queues of a status report, counted from the listing of the bucket's keys that
//! [`status`](crate::status) reads, by the queue's layout (see `src/queue.rs`).
//!
//! An item (`queue.<name>.i.<priority>.<id>`, live) is ready or in flight as
//! [`Queue::len`](distsync_core::Queue::len) tells them apart (see
//! [`standing`]): in flight while its delivery record (`.d.<id>`) names a live hold
//! (`.q.<session>.<n>`, a receiver's), ready otherwise; an item whose record is a
//! tombstone was consumed and is not counted. A `dequeue` claim takes its item out
//! of the `i.` keys into an in-flight record (`.c.<call id>`), which counts in flight
//! until the call has the item and purges it. The other keys (`.p.`, `.k.`) are
//! bookkeeping.

use std::collections::{BTreeMap, HashMap};

use distsync_core::status::{QueueStatus, StatusReport};

use crate::keys;
use crate::queue::{delivery_key, id_of, is_in_flight_record, item_place, standing, Standing};
use crate::store::Entry;

/// The non-empty queues among `entries` (the last message of each key listed,
/// tombstones included) whose names `report` covers, by name.
pub(crate) fn queues(report: &StatusReport, entries: &[Entry]) -> Vec<QueueStatus> {
    let by_key: HashMap<&str, &Entry> = entries
        .iter()
        .map(|entry| (entry.key.as_str(), entry))
        .collect();
    let live = |key: &[u8]| {
        std::str::from_utf8(key)
            .ok()
            .and_then(|key| by_key.get(key))
            .is_some_and(|entry| entry.live())
    };
    let mut queues: BTreeMap<String, QueueStatus> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| entry.live()) {
        let (ready, in_flight) = if is_in_flight_record(&entry.key) {
            (0, 1)
        } else if let Some((root, _)) = item_place(&entry.key) {
            let record = delivery_key(root, id_of(&entry.key));
            match standing(by_key.get(record.as_str()).copied(), |hold| live(hold)) {
                Standing::Free => (1, 0),
                Standing::Held => (0, 1),
                Standing::Consumed => continue,
            }
        } else {
            continue;
        };
        let Some(name) = keys::name_of(&entry.key).filter(|name| report.covers(name)) else {
            continue;
        };
        let queue = queues
            .entry(name)
            .or_insert_with_key(|name| QueueStatus::new(name.clone(), 0, 0));
        queue.ready += ready;
        queue.in_flight += in_flight;
    }
    queues.into_values().collect()
}

#[cfg(test)]
mod tests {
    //! The states of a queue's keys a dequeue's claim and a consumed item leave, which
    //! the integration test (`tests/it/status.rs`) cannot hold still: a claim's record
    //! lives for one call's round trip, a consumed item's key beside its record's
    //! tombstone only between two reads of one listing.

    use bytes::Bytes;
    use distsync_core::status::{QueueStatus, StatusReport};

    use crate::store::{Entry, Op};

    /// The last message of `key`: `value`, or a tombstone (`None`).
    fn entry(key: &str, value: Option<&str>) -> Entry {
        Entry {
            key: key.to_owned(),
            seq: 1,
            op: if value.is_some() { Op::Put } else { Op::Gone },
            value: Bytes::from(value.unwrap_or_default().to_owned()),
            headers: None,
        }
    }

    #[test]
    fn claims_are_in_flight_and_consumed_items_not_counted() {
        let entries = [
            // Free: a record naming no hold, a record naming an ended hold, no record.
            entry("queue.app.q.=.i.00000.1", Some("one")),
            entry("queue.app.q.=.d.1", Some("")),
            entry("queue.app.q.=.i.00000.2", Some("two")),
            entry(
                "queue.app.q.=.d.2",
                Some("queue.app.q.=.q.00000000000000aa.1"),
            ),
            entry("queue.app.q.=.q.00000000000000aa.1", None),
            entry("queue.app.q.=.i.00001.3", Some("three")),
            // Held: a record naming a live hold.
            entry("queue.app.q.=.i.00000.4", Some("four")),
            entry(
                "queue.app.q.=.d.4",
                Some("queue.app.q.=.q.00000000000000bb.1"),
            ),
            entry(
                "queue.app.q.=.q.00000000000000bb.1",
                Some("queue.app.q.=.i.00000.4"),
            ),
            // Consumed: the record's tombstone, read after the item.
            entry("queue.app.q.=.i.00000.5", Some("five")),
            entry("queue.app.q.=.d.5", None),
            // A claim under way, and one whose call purged it.
            entry("queue.app.q.=.c.6", Some("six")),
            entry("queue.app.q.=.c.7", None),
            // Bookkeeping.
            entry("queue.app.q.=.p.00000", Some("")),
            entry("queue.app.q.=.k.once", Some("queue.app.q.=.i.00000.1")),
            // Only claims, under an escaped name; a name outside the prefix; a lock.
            entry("queue.app.x=2Ey.=.c.8", Some("eight")),
            entry("queue.other.=.i.00000.9", Some("nine")),
            entry("lock.app.q.=.q.00000000000000cc.1", Some("")),
        ];
        let report = StatusReport::new(crate::BACKEND, "app/");
        assert_eq!(
            super::queues(&report, &entries),
            [
                QueueStatus::new("app/q", 3, 2),
                QueueStatus::new("app/x.y", 0, 1)
            ]
        );
    }
}
