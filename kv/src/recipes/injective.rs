//! A property test: distinct (kind, name) pairs never share a key.
//!
//! Random names from a small alphabet rich in the characters that could make two
//! names meet (`/`, `%`, the escape digits, digits that look like queue positions,
//! `{`, `}`, `:`, non-ASCII) are each given a lock, a write lock, a queue item, a held
//! barrier, a double-barrier entry, a semaphore permit and an STM key, all through the
//! real recipes on the memory store. After each operation the whole store is compared
//! with its state before: an operation may only create, change or delete keys of its
//! own primitive. At the end every primitive still sees exactly its own state.

use distsync_core::Primitives;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use crate::kv::{Kv, Range, Revision};
use crate::memory::{MemoryBackend, MemoryKv};
use crate::recipes::KvBackend;
use distsync_core::backend::Backend;
use distsync_core::name::Name;
use distsync_core::session::SessionOptions;
use distsync_core::stm::Isolation;

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

const ALPHABET: &[&str] = &[
    "a",
    "b",
    "/",
    "%",
    "2",
    "F",
    "25",
    "0",
    "00001",
    "0000000000000001",
    "{",
    "}",
    ":",
    "é",
    "λ",
    "i",
    "c",
    "w",
    "s",
    "queue",
    "stm",
    "barrier",
    "read",
    "ready",
    "waiters",
];

/// Up to `count` distinct valid names.
fn random_names(rng: &mut Rng, count: usize) -> Vec<Name> {
    let mut names = BTreeSet::new();
    for _ in 0..count * 4 {
        if names.len() == count {
            break;
        }
        let parts = 1 + rng.below(5);
        let raw: String = (0..parts)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        if let Ok(name) = Name::new(raw) {
            names.insert(name);
        }
    }
    names.into_iter().collect()
}

/// Every key with its (create, mod) revisions.
async fn state(kv: &MemoryKv) -> BTreeMap<String, (Revision, Revision)> {
    let all = kv.range(Range::prefix("")).await.unwrap();
    all.kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.create_revision, kv.mod_revision)))
        .collect()
}

/// Which keys an operation created, changed or deleted.
fn touched(
    before: &BTreeMap<String, (Revision, Revision)>,
    after: &BTreeMap<String, (Revision, Revision)>,
) -> BTreeSet<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect()
}

/// Whether a lock on `a` may wait behind a lock on `b` in Go's layout (same name, or
/// `b` nested under `a`): documented over-exclusion between locks, not a shared key.
fn go_nesting(a: &Name, b: &Name) -> bool {
    b.as_str() == a.as_str() || b.as_str().starts_with(&format!("{a}/"))
}

#[tokio::test]
async fn distinct_kinds_and_names_never_share_a_key() {
    for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 0xdead_beef] {
        let mut rng = Rng(seed);
        let names = random_names(&mut rng, 24);
        assert!(names.len() >= 20, "only {} names", names.len());
        let backend: MemoryBackend =
            KvBackend::with_kv(MemoryKv::new(), "ns/", crate::memory::capabilities());
        let kv = backend.kv().clone();
        let stm = backend.stm().unwrap();
        // Keys by owner, `(kind, name)`.
        let mut owners: BTreeMap<String, (&'static str, Name)> = BTreeMap::new();
        let mut holds = Vec::new();
        for name in &names {
            let session = backend.session(SessionOptions::default()).await.unwrap();
            for kind in [
                "lock",
                "rwlock",
                "queue",
                "barrier",
                "double-barrier",
                "semaphore",
                "stm",
            ] {
                let before = state(&kv).await;
                match kind {
                    "lock" => {
                        let locker = backend.locker(&session, name.clone()).unwrap();
                        match locker.try_lock().await.unwrap() {
                            Some(guard) => holds.push(Box::new(guard) as Box<dyn Send>),
                            None => assert!(
                                names
                                    .iter()
                                    .any(|other| other != name && go_nesting(name, other)),
                                "lock {name:?} is blocked by another kind"
                            ),
                        }
                    }
                    "rwlock" => {
                        let rw = backend.rwlock(&session, name.clone()).unwrap();
                        let guard = rw.try_write().await.unwrap();
                        let guard = guard.unwrap_or_else(|| panic!("rwlock {name:?} blocked"));
                        holds.push(Box::new(guard));
                    }
                    "queue" => {
                        let q = backend.queue(name.clone()).unwrap();
                        q.enqueue_with_priority(name.to_string(), 1).await.unwrap();
                    }
                    "barrier" => backend.barrier(name.clone()).unwrap().hold().await.unwrap(),
                    "semaphore" => {
                        let semaphore = backend
                            .semaphore(&session, name.clone(), NonZeroUsize::MIN)
                            .unwrap();
                        let permit = semaphore.try_acquire().await.unwrap();
                        let permit = permit.unwrap_or_else(|| panic!("semaphore {name:?} blocked"));
                        holds.push(Box::new(permit));
                    }
                    "double-barrier" => {
                        let db = backend
                            .double_barrier(&session, name.clone(), NonZeroUsize::MIN)
                            .unwrap();
                        db.enter().await.unwrap();
                        holds.push(Box::new(db));
                    }
                    _ => {
                        let key = name.clone();
                        stm.atomically(Isolation::default(), |tx| {
                            let key = key.clone();
                            async move {
                                tx.put(key.as_str(), key.to_string());
                                Ok(())
                            }
                        })
                        .await
                        .unwrap();
                    }
                }
                let after = state(&kv).await;
                for key in touched(&before, &after) {
                    assert!(key.starts_with("ns/"), "{key:?} is outside the namespace");
                    if let Some(owner) = owners.get(&key) {
                        assert_eq!(
                            owner,
                            &(kind, name.clone()),
                            "{kind} {name:?} touched {key:?} of {owner:?}"
                        );
                    }
                    owners.insert(key, (kind, name.clone()));
                }
            }
            holds.push(Box::new(session));
        }
        // Every primitive still sees exactly its own state.
        for name in &names {
            let q = backend.queue(name.clone()).unwrap();
            assert_eq!(q.len().await.unwrap(), 1, "queue {name:?}");
            assert_eq!(
                q.try_dequeue().await.unwrap().unwrap(),
                name.to_string(),
                "queue {name:?}"
            );
            let value = stm
                .atomically(Isolation::default(), |tx| {
                    let key = name.clone();
                    async move { tx.get(key.as_str()).await }
                })
                .await
                .unwrap();
            assert_eq!(value.unwrap(), name.to_string(), "stm {name:?}");
        }
        let snapshot = backend.export().await.unwrap();
        assert_eq!(snapshot.stm.len(), names.len());
        assert_eq!(snapshot.barriers.len(), names.len());
        drop(holds);
    }
}
