//! The keys this process last wrote on a lease, as it wrote them: what lets a
//! transaction on them skip the read before its locked batch.
//!
//! A transaction reads what it depends on in one round trip, then sends the batch that
//! takes the revision lock, checks that read unchanged and writes ([`crate::txn`]). For
//! the keys a session holds (a lock's, an election's, a semaphore's key, each named by
//! its session's lease) that read tells nothing new: only the process of the session
//! writes such a key, so it is as this process last wrote it, or missing before its
//! first put; others only delete it (the reaper at the lease's expiry, a revoke, a
//! break, a purge). So a transaction that names only such keys is played out on what
//! this process wrote and sent at once as its locked batch: a take and a release of a
//! lock cost one round trip each instead of two.
//!
//! A guess is never trusted: the batch checks under the lock that every guessed key is
//! there with exactly the row guessed (revisions, version and lease), that every key
//! guessed missing is missing and that every lease named is live, as it checks a read
//! ([`crate::optimistic`]). A wrong guess (the key deleted by another process, a
//! commit of this process not yet recorded here) writes nothing; its keys are
//! forgotten here and the transaction runs its two phases as any other. A guess costs
//! nothing when right and a round trip when wrong.
//!
//! Only keys on a lease are kept, and only from commits of this process's own
//! transactions (never from one in a caller's transaction, which may roll back). A
//! deleted key is dropped; a key on no lease (shared data other processes write) is
//! never guessed.

use std::collections::HashMap;
use std::sync::Mutex;

use distsync_kv::kv::{EventKind, KeyValue, WatchEvent};

/// How many keys are kept at most: past it, everything is forgotten (a key that is
/// not here is read before it is written, as without guesses). Keys leave when this
/// process deletes them, so the number grows past the live holds of the process only
/// by keys others deleted (expired, broken, purged).
const MAX_KEYS: usize = 100_000;

/// The keys this process last wrote on a lease, each as written (its value left
/// empty: a transaction's read never needs it).
#[derive(Debug, Default)]
pub(crate) struct OwnKeys {
    keys: Mutex<HashMap<String, KeyValue>>,
}

impl OwnKeys {
    /// Records the changes of a transaction this process committed.
    pub(crate) fn committed(&self, events: &[WatchEvent]) {
        let mut keys = self.lock();
        for event in events {
            let kv = &event.kv;
            if event.kind == EventKind::Put && kv.lease != 0 {
                // A later commit recorded first is the newer row: keep it.
                if keys
                    .get(&kv.key)
                    .is_some_and(|known| known.mod_revision > kv.mod_revision)
                {
                    continue;
                }
                if keys.len() >= MAX_KEYS && !keys.contains_key(&kv.key) {
                    keys.clear();
                }
                keys.insert(
                    kv.key.clone(),
                    KeyValue {
                        value: bytes::Bytes::new(),
                        ..kv.clone()
                    },
                );
            } else {
                keys.remove(&kv.key);
            }
        }
    }

    /// The row `key` had when this process last wrote it on a lease, if it did and
    /// has not deleted it since.
    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.lock().get(key).cloned()
    }

    /// Forgets `keys`: a guess about them was wrong.
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut known = self.lock();
        for key in keys {
            known.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyValue>> {
        // The map holds hints only: a panic elsewhere cannot leave it wrong in a way
        // that matters, since every guess is checked.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, revision: i64, lease: i64) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value: bytes::Bytes::from_static(b"value"),
                create_revision: 3,
                mod_revision: revision,
                version: 2,
                lease,
            },
        }
    }

    fn delete(key: &str, revision: i64) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                mod_revision: revision,
                ..KeyValue::default()
            },
        }
    }

    #[test]
    fn keeps_keys_on_a_lease_until_deleted() {
        let own = OwnKeys::default();
        own.committed(&[put("held", 5, 9), put("shared", 5, 0)]);
        let held = own.get("held").expect("a key on a lease is kept");
        assert_eq!(
            (
                held.create_revision,
                held.mod_revision,
                held.version,
                held.lease
            ),
            (3, 5, 2, 9)
        );
        assert!(held.value.is_empty());
        assert!(own.get("shared").is_none(), "a key on no lease is not kept");
        own.committed(&[delete("held", 6)]);
        assert!(own.get("held").is_none());
    }

    #[test]
    fn an_older_commit_recorded_late_does_not_replace_a_newer_one() {
        let own = OwnKeys::default();
        own.committed(&[put("held", 8, 9)]);
        own.committed(&[put("held", 7, 9)]);
        assert_eq!(own.get("held").map(|kv| kv.mod_revision), Some(8));
    }

    #[test]
    fn a_key_moved_off_its_lease_is_dropped() {
        let own = OwnKeys::default();
        own.committed(&[put("held", 5, 9)]);
        own.committed(&[put("held", 6, 0)]);
        assert!(own.get("held").is_none());
    }

    #[test]
    fn forgotten_keys_are_gone() {
        let own = OwnKeys::default();
        own.committed(&[put("a", 5, 9), put("b", 5, 9)]);
        own.forget(["a"]);
        assert!(own.get("a").is_none());
        assert!(own.get("b").is_some());
    }
}
