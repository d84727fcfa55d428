//! Reading a [`Kv`] store's durable state for migration ([`crate::migrate`]).
//!
//! Every key under the namespace is classified by the layouts of this module's
//! recipes:
//!
//! - a key attached to a lease is a live hold (lock, election, read/write, waiter or
//!   double-barrier entry): listed in `active_holds`, not copied;
//! - `<ns><name>/<%05d>/<%016d>` is a queue item of `<name>` at that priority, and
//!   `__<ns><name>/<%05d>` its sequence guard (skipped; so a plain key of that shape
//!   is skipped too);
//! - any other key is a held barrier when its value is empty (a barrier is an empty
//!   key) and an STM key otherwise.
//!
//! etcd keys carry no type, so an STM key whose value is empty is exported as a held
//! barrier; between two etcd-like stores that is the same key and value, but copied
//! into Redis or PostgreSQL it becomes a barrier. Keys that are not valid names (other
//! applications' keys, with an empty namespace) are skipped with a warning: give every
//! application its own namespace.

use crate::error::Result;
use crate::kv::{Kv, Range};
use crate::migrate::{QueueItem, Snapshot};
use crate::name::Name;

/// The snapshot of everything under `namespace`.
pub(super) async fn export(kv: &dyn Kv, namespace: &str) -> Result<Snapshot> {
    let everything = kv.range(Range::prefix(namespace)).await?;
    let mut snapshot = Snapshot::default();
    for entry in everything.kvs {
        if entry.lease != 0 {
            snapshot.active_holds.push(entry.key);
            continue;
        }
        let Some(relative) = entry.key.strip_prefix(namespace) else {
            continue;
        };
        if let Some((name, priority)) = queue_item(relative) {
            snapshot.queues.entry(name).or_default().push(QueueItem {
                priority,
                item: entry.value,
            });
            continue;
        }
        if is_sequence_guard(relative) {
            continue;
        }
        let key = &entry.key;
        let value = entry.value;
        match Name::new(relative) {
            Ok(name) if value.is_empty() => snapshot.barriers.push(name),
            Ok(name) => {
                snapshot.stm.insert(name, value);
            }
            Err(error) => {
                tracing::warn!(%key, %error, "export skips a key that is not a distsync name");
            }
        }
    }
    Ok(snapshot)
}

fn digits(segment: &str, count: usize) -> bool {
    segment.len() == count && segment.bytes().all(|b| b.is_ascii_digit())
}

/// `(<name>, priority)` if `relative` is `<name>/<%05d>/<%016d>`.
fn queue_item(relative: &str) -> Option<(Name, u16)> {
    let mut segments = relative.rsplitn(3, '/');
    let sequence = segments.next()?;
    let priority = segments.next()?;
    let name = segments.next()?;
    if !digits(sequence, 16) || !digits(priority, 5) {
        return None;
    }
    Some((Name::new(name).ok()?, priority.parse().ok()?))
}

/// Whether `relative` is a queue's sequence guard `__<name>/<%05d>` (seen under the
/// namespace only when the namespace is empty).
fn is_sequence_guard(relative: &str) -> bool {
    match relative
        .strip_prefix("__")
        .and_then(|rest| rest.rsplit_once('/'))
    {
        Some((name, priority)) => digits(priority, 5) && Name::new(name).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_sequence_guard, queue_item};

    #[test]
    fn queue_item_keys_are_recognised_by_their_layout() {
        let (name, priority) = queue_item("jobs/eu/00007/0000000000000003").unwrap();
        assert_eq!((name.as_str(), priority), ("jobs/eu", 7));
        assert!(queue_item("jobs/7/0000000000000003").is_none());
        assert!(queue_item("jobs/00007/3").is_none());
        assert!(queue_item("00007/0000000000000003").is_none());
        assert!(queue_item("jobs/99999/0000000000000003").is_none());
        assert!(is_sequence_guard("__jobs/eu/00007"));
        assert!(!is_sequence_guard("__jobs"));
        assert!(!is_sequence_guard("jobs/00007"));
    }
}
