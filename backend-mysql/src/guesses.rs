//! What a transaction guesses instead of reading: the keys this process last wrote on a
//! lease, as it wrote them, and which prefixes were lately found not empty.
//!
//! Two kinds of a transaction's read before its locked batch ([`crate::txn`]) tell
//! little enough to be guessed instead:
//!
//! - **A session's own keys.** A key a session holds (a lock's, an election's, a
//!   semaphore's key, each named by its session's lease) is written by its process
//!   only: it is as this process last wrote it, or missing before its first put; others
//!   only delete it (the reaper at the lease's expiry, a revoke, a break, a purge). A
//!   take and a release of a lock then cost one round trip each instead of two.
//! - **A prefix compared as empty** (the unfair lock's take: nobody holds or waits under
//!   the lock's name). It is guessed empty unless a guess of it was wrong within the
//!   last [`MISSED_FOR`] and this process has deleted no key under it since: an
//!   uncontended take is one round trip, a holder that releases and takes again (the
//!   unfair lock's barging releaser) guesses its take, and a contended name costs a
//!   process at most one wasted batch per release of its own or per [`MISSED_FOR`].
//!
//! A guess is never trusted: the batch checks under the lock that every guessed key is
//! there with exactly the row guessed (revisions, version and lease), that every key
//! guessed missing is missing, that every prefix guessed empty is, and that every lease
//! named is live, as it checks a read ([`crate::optimistic`]). A wrong guess writes
//! nothing; its keys are forgotten here, its prefixes are marked, and the transaction
//! runs its two phases as any other.
//!
//! Only keys on a lease are kept, and only from commits of this process's own
//! transactions (never from one in a caller's transaction, which may roll back). A
//! deleted key is dropped; a key on no lease (shared data other processes write) is
//! never guessed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use distsync_core::raw::locked;
use distsync_kv::kv::{EventKind, KeyValue, WatchEvent};

/// How many keys are kept at most: past it, everything is forgotten (a key that is
/// not here is read before it is written, as without guesses). Keys leave when this
/// process deletes them, so the number grows past the live holds of the process only
/// by keys others deleted (expired, broken, purged).
const MAX_KEYS: usize = 100_000;

/// How long a prefix found not empty by a wrong guess is read rather than guessed.
pub(crate) const MISSED_FOR: Duration = Duration::from_secs(1);

/// The keys this process last wrote on a lease, each as written (its value left
/// empty: a transaction's read never needs it), and when a guess of a prefix being
/// empty was last wrong.
#[derive(Debug, Default)]
pub(crate) struct Guesses {
    keys: Mutex<HashMap<String, KeyValue>>,
    not_empty: Mutex<HashMap<String, Instant>>,
}

impl Guesses {
    /// Records the changes of a transaction this process committed. A key it deleted
    /// also lifts the mark of every prefix over it: the prefix may be empty again (see
    /// the module docs).
    pub(crate) fn committed(&self, events: &[WatchEvent]) {
        let deleted: Vec<&str> = events
            .iter()
            .filter(|event| event.kind == EventKind::Delete)
            .map(|event| event.kv.key.as_str())
            .collect();
        if !deleted.is_empty() {
            hints(&self.not_empty)
                .retain(|prefix, _| !deleted.iter().any(|key| key.starts_with(prefix.as_str())));
        }
        let mut keys = hints(&self.keys);
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
        hints(&self.keys).get(key).cloned()
    }

    /// Whether `prefix` may be guessed empty: no guess of it was wrong within the
    /// last [`MISSED_FOR`].
    pub(crate) fn may_be_empty(&self, prefix: &str) -> bool {
        hints(&self.not_empty)
            .get(prefix)
            .is_none_or(|missed| missed.elapsed() >= MISSED_FOR)
    }

    /// A guess was wrong: forgets `keys` and marks `prefixes` not empty for a while.
    pub(crate) fn missed<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) {
        let mut known = hints(&self.keys);
        for key in keys {
            known.remove(key);
        }
        drop(known);
        let mut missed = hints(&self.not_empty);
        missed.retain(|_, at| at.elapsed() < MISSED_FOR);
        let now = Instant::now();
        for prefix in prefixes {
            missed.insert(prefix.to_owned(), now);
        }
    }
}

/// The guard of a map of hints. They are hints only: a panic elsewhere cannot leave one
/// wrong in a way that matters, since every guess is checked.
fn hints<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    locked(map)
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
        let own = Guesses::default();
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
        let own = Guesses::default();
        own.committed(&[put("held", 8, 9)]);
        own.committed(&[put("held", 7, 9)]);
        assert_eq!(own.get("held").map(|kv| kv.mod_revision), Some(8));
    }

    #[test]
    fn a_key_moved_off_its_lease_is_dropped() {
        let own = Guesses::default();
        own.committed(&[put("held", 5, 9)]);
        own.committed(&[put("held", 6, 0)]);
        assert!(own.get("held").is_none());
    }

    #[test]
    fn a_wrong_guess_forgets_its_keys_and_marks_its_prefixes() {
        let own = Guesses::default();
        own.committed(&[put("a", 5, 9), put("b", 5, 9)]);
        assert!(own.may_be_empty("lock/"));
        own.missed(["a"], ["lock/"]);
        assert!(own.get("a").is_none());
        assert!(own.get("b").is_some());
        assert!(!own.may_be_empty("lock/"), "a prefix just found not empty");
        assert!(own.may_be_empty("other/"));
    }

    #[test]
    fn a_delete_under_a_marked_prefix_lifts_its_mark() {
        let own = Guesses::default();
        own.missed([], ["lock/", "queue/"]);
        own.committed(&[put("lock/mine", 5, 9)]);
        assert!(!own.may_be_empty("lock/"), "a put leaves the mark");
        own.committed(&[delete("lock/mine", 6)]);
        assert!(
            own.may_be_empty("lock/"),
            "a release may have emptied the prefix"
        );
        assert!(
            !own.may_be_empty("queue/"),
            "a delete elsewhere leaves other marks"
        );
    }
}
