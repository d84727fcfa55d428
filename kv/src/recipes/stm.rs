//! Software transactional memory, as etcd's Go `concurrency.STM`.
//!
//! Layout: STM key `k` is the store key `<ns>/stm/<escaped k>` (see [`Kind::prefix`];
//! Go's STM uses raw keys, which would share keys with every other primitive). Values
//! are stored as given, with no lease.
//!
//! An attempt records every key it reads with the key's mod revision (the read set).
//! The commit is one transaction whose compares depend on the level, as in Go:
//!
//! - `SerializableSnapshot`: the first read fixes a revision `R` and every later read
//!   is served at `R`; the commit requires every key read to be unchanged
//!   (`mod_revision == seen`) and every key written to be unmodified since the
//!   snapshot (`mod_revision < R + 1`).
//! - `Serializable`: reads as above; the commit checks the read set only.
//! - `RepeatableReads`: each key is read once at the latest revision and cached; the
//!   commit checks the read set.
//! - `ReadCommitted`: reads as above; the commit checks nothing.
//!
//! A retry may prefetch the keys the previous attempt read, in one transaction of
//! ranges (one revision); a prefetched key enters the read set only when the body
//! reads it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{Compare, CompareOp, KeyValue, Kv, Range, Revision, Txn, TxnOp};
use distsync_core::capabilities::Capabilities;
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::stm::{Isolation, StmAttempt, StmEngine, Write};

use super::key::{range_at, KeySpace, Kind};

/// An [`StmEngine`] over a [`Kv`] store.
pub(crate) struct KvStm {
    kv: Arc<dyn Kv>,
    space: KeySpace,
    capabilities: Capabilities,
}

impl KvStm {
    /// The STM over every key under `namespace`, offering the levels `capabilities`
    /// declares.
    pub(crate) fn new(kv: Arc<dyn Kv>, space: &KeySpace, capabilities: Capabilities) -> Self {
        Self {
            kv,
            space: space.clone(),
            capabilities,
        }
    }
}

/// One read: the key as read (absent: `None`) and the store revision of the read.
#[derive(Clone, Debug)]
struct Read {
    kv: Option<KeyValue>,
    revision: Revision,
}

#[async_trait]
impl StmEngine for KvStm {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        if !self.capabilities.supports_isolation(isolation) {
            let what = format!("stm isolation {isolation}");
            return Err(Error::unsupported(self.kv.backend(), what));
        }
        let mut attempt = KvStmAttempt {
            kv: Arc::clone(&self.kv),
            space: self.space.clone(),
            isolation,
            reads: BTreeMap::new(),
            prefetched: HashMap::new(),
            snapshot: None,
        };
        if !prefetch.is_empty() {
            attempt.prefetch(prefetch).await?;
        }
        Ok(Box::new(attempt))
    }
}

/// One attempt of a [`KvStm`] transaction.
struct KvStmAttempt {
    kv: Arc<dyn Kv>,
    space: KeySpace,
    isolation: Isolation,
    /// The read set.
    reads: BTreeMap<Name, Read>,
    /// Keys fetched ahead, not yet read by the body.
    prefetched: HashMap<Name, Read>,
    /// The revision reads are served at (serializable levels, after the first read).
    snapshot: Option<Revision>,
}

impl KvStmAttempt {
    fn store_key(&self, key: &Name) -> String {
        self.space.root(Kind::Stm, key)
    }

    fn serializable(&self) -> bool {
        matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }

    /// Reads `keys` in one transaction (one revision) into the prefetch cache.
    async fn prefetch(&mut self, keys: &[Name]) -> Result<()> {
        for key in keys {
            self.space.check(Kind::Stm, key)?;
        }
        let ops = keys
            .iter()
            .map(|key| TxnOp::Range(Range::key(self.store_key(key))))
            .collect();
        let response = self.kv.txn(Txn::default().and_then(ops)).await?;
        for (index, key) in keys.iter().enumerate() {
            let range = range_at(&*self.kv, &response, index)?;
            self.prefetched.insert(
                key.clone(),
                Read {
                    kv: range.kvs.into_iter().next(),
                    revision: response.revision,
                },
            );
        }
        Ok(())
    }

    /// Go's `readSet.first`: the lowest revision a key was read at.
    fn first_read_revision(&self) -> Revision {
        self.reads
            .values()
            .map(|read| read.revision)
            .min()
            .unwrap_or(Revision::MAX - 1)
    }

    /// The compares of the commit at this level.
    fn conflicts(&self, writes: &[Write]) -> Vec<Compare> {
        let read_set = || {
            self.reads.iter().map(|(key, read)| {
                let seen = read.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                Compare::mod_revision(self.store_key(key), CompareOp::Equal, seen)
            })
        };
        match self.isolation {
            Isolation::SerializableSnapshot => {
                let first = self.first_read_revision();
                read_set()
                    .chain(writes.iter().map(|(key, _)| {
                        Compare::mod_revision(self.store_key(key), CompareOp::Less, first + 1)
                    }))
                    .collect()
            }
            Isolation::Serializable | Isolation::RepeatableReads => read_set().collect(),
            Isolation::ReadCommitted => Vec::new(),
        }
    }
}

#[async_trait]
impl StmAttempt for KvStmAttempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if let Some(read) = self.reads.get(key) {
            return Ok(read.kv.as_ref().map(|kv| kv.value.clone()));
        }
        self.space.check(Kind::Stm, key)?;
        let first_read = self.reads.is_empty();
        let read = match self.prefetched.remove(key) {
            Some(read) => read,
            None => {
                let range = Range {
                    revision: self.snapshot,
                    ..Range::key(self.store_key(key))
                };
                let response = self.kv.range(range).await?;
                Read {
                    kv: response.kvs.into_iter().next(),
                    revision: response.revision,
                }
            }
        };
        if first_read && self.serializable() {
            // The transaction's base revision is that of its first read.
            self.snapshot = Some(read.revision);
        }
        let value = read.kv.as_ref().map(|kv| kv.value.clone());
        self.reads.insert(key.clone(), read);
        Ok(value)
    }

    fn read_keys(&self) -> Vec<Name> {
        self.reads.keys().cloned().collect()
    }

    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool> {
        for (key, _) in &writes {
            self.space.check(Kind::Stm, key)?;
        }
        let compares = self.conflicts(&writes);
        let ops = writes
            .into_iter()
            .map(|(key, value)| {
                let key = self.store_key(&key);
                match value {
                    Some(value) => TxnOp::put(key, value, 0),
                    None => TxnOp::delete(key),
                }
            })
            .collect();
        let response = self.kv.txn(Txn::when(compares).and_then(ops)).await?;
        Ok(response.succeeded)
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::kv::{Kv, Range, Txn, TxnOp};
    use crate::recipes::testing::{backend, within};

    use distsync_core::stm::{Isolation, StmEngine, StmOptions};
    use distsync_core::{Error, Stm};

    /// The store key of STM key `key` in a backend without namespace.
    fn stored(key: &str) -> String {
        format!("/stm/{}", crate::recipes::key::escape(key))
    }

    fn number(value: Option<Bytes>) -> i64 {
        value.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap())
    }

    /// Runs a body that reads `read` (if any) and writes `written`, while another
    /// client writes `interfering` during the first attempt; returns the attempts.
    async fn attempts_with_interference(
        isolation: Isolation,
        read: Option<&'static str>,
        written: &'static str,
        interfering: &'static str,
    ) -> u32 {
        let backend = backend();
        let kv = backend.kv().clone();
        let stm = backend.stm().unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let committed = stm
            .atomically_with(isolation, &StmOptions::default(), |tx| {
                let kv = kv.clone();
                let runs = Arc::clone(&runs);
                async move {
                    if let Some(read) = read {
                        tx.get(read).await?;
                    }
                    tx.get("unrelated").await?;
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        kv.txn(Txn::default().and_then(vec![TxnOp::put(
                            stored(interfering),
                            "9",
                            0,
                        )]))
                        .await?;
                    }
                    tx.put(written, "1");
                    Ok(())
                }
            })
            .await
            .unwrap();
        committed.attempts
    }

    #[tokio::test]
    async fn a_changed_read_conflicts_except_under_read_committed() {
        for isolation in [
            Isolation::SerializableSnapshot,
            Isolation::Serializable,
            Isolation::RepeatableReads,
        ] {
            assert_eq!(
                attempts_with_interference(isolation, Some("k"), "out", "k").await,
                2,
                "{isolation}"
            );
        }
        assert_eq!(
            attempts_with_interference(Isolation::ReadCommitted, Some("k"), "out", "k").await,
            1
        );
    }

    #[tokio::test]
    async fn only_serializable_snapshot_checks_the_write_set() {
        assert_eq!(
            attempts_with_interference(Isolation::SerializableSnapshot, None, "w", "w").await,
            2
        );
        assert_eq!(
            attempts_with_interference(Isolation::Serializable, None, "w", "w").await,
            1
        );
    }

    /// What each attempt read of `a` then `b`, when `b` changes after the first
    /// attempt's first read.
    async fn reads_per_attempt(isolation: Isolation) -> Vec<(i64, i64)> {
        let backend = backend();
        let kv = backend.kv().clone();
        let stm = backend.stm().unwrap();
        kv.txn(Txn::default().and_then(vec![
            TxnOp::put(stored("a"), "1", 0),
            TxnOp::put(stored("b"), "1", 0),
        ]))
        .await
        .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        stm.atomically(isolation, |tx| {
            let kv = kv.clone();
            let seen = Arc::clone(&seen);
            async move {
                let a = number(tx.get("a").await?);
                if seen.lock().unwrap().is_empty() {
                    kv.txn(Txn::default().and_then(vec![TxnOp::put(stored("b"), "2", 0)]))
                        .await?;
                }
                let b = number(tx.get("b").await?);
                seen.lock().unwrap().push((a, b));
                Ok(())
            }
        })
        .await
        .unwrap();
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[tokio::test]
    async fn serializable_reads_come_from_the_first_reads_revision() {
        // The snapshot shows b as it was at the first read; the commit then finds b
        // changed, and the retry sees the new value.
        assert_eq!(
            reads_per_attempt(Isolation::Serializable).await,
            [(1, 1), (1, 2)]
        );
        assert_eq!(
            reads_per_attempt(Isolation::SerializableSnapshot).await,
            [(1, 1), (1, 2)]
        );
        // Repeatable reads read the latest value once, so nothing conflicts here.
        assert_eq!(
            reads_per_attempt(Isolation::RepeatableReads).await,
            [(1, 2)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bank_keeps_its_total() {
        for isolation in [
            Isolation::SerializableSnapshot,
            Isolation::Serializable,
            Isolation::RepeatableReads,
        ] {
            let backend = backend();
            let stm: Stm = backend.stm().unwrap();
            let accounts = ["acct/0", "acct/1", "acct/2", "acct/3", "acct/4"];
            stm.atomically(isolation, |tx| async move {
                for account in accounts {
                    tx.put(account, "100");
                }
                Ok(())
            })
            .await
            .unwrap();
            let mut workers = Vec::new();
            for worker in 0..6usize {
                let stm = stm.clone();
                workers.push(tokio::spawn(async move {
                    for round in 0..20usize {
                        let from = accounts[(worker + round) % 5];
                        let to = accounts[(worker * 3 + round * 7 + 1) % 5];
                        if from == to {
                            continue;
                        }
                        let options = StmOptions::with_max_attempts(10_000);
                        stm.atomically_with(isolation, &options, |tx| async move {
                            let a = number(tx.get(from).await?);
                            let b = number(tx.get(to).await?);
                            let moved = a / 2;
                            tx.put(from, (a - moved).to_string());
                            tx.put(to, (b + moved).to_string());
                            Ok(())
                        })
                        .await
                        .unwrap();
                    }
                }));
            }
            for worker in workers {
                within(worker).await.unwrap();
            }
            let total = stm
                .atomically(isolation, |tx| async move {
                    let mut total = 0;
                    for account in accounts {
                        total += number(tx.get(account).await?);
                    }
                    Ok(total)
                })
                .await
                .unwrap();
            assert_eq!(total, 500, "{isolation}");
        }
    }

    #[tokio::test]
    async fn keys_live_under_the_namespace_and_unsupported_levels_say_so() {
        let backend = backend();
        let stm = backend.stm().unwrap();
        stm.atomically(Isolation::default(), |tx| async move {
            tx.put("x/y", "v");
            Ok(())
        })
        .await
        .unwrap();
        let found = backend.kv().range(Range::key("/stm/x%2Fy")).await.unwrap();
        assert_eq!(found.kvs[0].value, Bytes::from("v"));
        assert_eq!(stored("x/y"), "/stm/x%2Fy");

        let mut capabilities = crate::memory::capabilities();
        capabilities.stm_read_committed = false;
        let limited = super::KvStm::new(backend.kv().clone(), &Default::default(), capabilities);
        assert!(matches!(
            limited.begin(Isolation::ReadCommitted, &[]).await,
            Err(Error::Unsupported { .. })
        ));
    }

    /// Two transactions race on `keys`: each reads both, and if the rule `allowed`
    /// holds for the values read, writes `"1"` to its own key (`keys[0]` for the first,
    /// `keys[1]` for the second). The second runs to its commit in the middle of the
    /// first's first attempt, after the first's reads. Returns the first's attempts
    /// and the values left in the store.
    async fn race(
        isolation: Isolation,
        initial: Option<&'static str>,
        allowed: fn(i64, i64) -> bool,
    ) -> (u32, i64, i64) {
        let backend = backend();
        let stm = backend.stm().unwrap();
        let keys = ["race/a", "race/b"];
        if let Some(initial) = initial {
            stm.atomically(isolation, |tx| async move {
                tx.put(keys[0], initial);
                tx.put(keys[1], initial);
                Ok(())
            })
            .await
            .unwrap();
        }
        let runs = Arc::new(AtomicU32::new(0));
        let second = stm.clone();
        let committed = stm
            .atomically_with(isolation, &StmOptions::default(), |tx| {
                let runs = Arc::clone(&runs);
                let second = second.clone();
                async move {
                    let a = tx.get(keys[0]).await?;
                    let b = tx.get(keys[1]).await?;
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        second
                            .atomically(isolation, |tx| async move {
                                let a = tx.get(keys[0]).await?;
                                let b = tx.get(keys[1]).await?;
                                if allowed(number(a), number(b)) {
                                    tx.put(keys[1], "1");
                                }
                                Ok(())
                            })
                            .await?;
                    }
                    if allowed(number(a), number(b)) {
                        tx.put(keys[0], "1");
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
        let (a, b) = stm
            .atomically(isolation, |tx| async move {
                Ok((
                    number(tx.get(keys[0]).await?),
                    number(tx.get(keys[1]).await?),
                ))
            })
            .await
            .unwrap();
        (committed.attempts, a, b)
    }

    #[tokio::test]
    async fn write_skew_is_prevented_at_every_level_but_read_committed() {
        // Two doctors on call (0: on duty): each may go off duty (write 1) only while
        // both are on duty, so at least one stays.
        let both_on_duty = |a: i64, b: i64| a == 0 && b == 0;
        for isolation in [
            Isolation::SerializableSnapshot,
            Isolation::Serializable,
            Isolation::RepeatableReads,
        ] {
            let (attempts, a, b) = race(isolation, Some("0"), both_on_duty).await;
            assert_eq!(attempts, 2, "{isolation}: the first was not retried");
            assert_eq!((a, b), (0, 1), "{isolation}: write skew");
        }
        let (attempts, a, b) = race(Isolation::ReadCommitted, Some("0"), both_on_duty).await;
        assert_eq!(
            (attempts, a, b),
            (1, 1, 1),
            "read committed allows the write skew"
        );
    }

    #[tokio::test]
    async fn phantoms_of_absent_keys_are_prevented_at_every_level_but_read_committed() {
        // Each creates its key only if neither key exists yet.
        let neither = |a: i64, b: i64| a == 0 && b == 0;
        for isolation in [
            Isolation::SerializableSnapshot,
            Isolation::Serializable,
            Isolation::RepeatableReads,
        ] {
            let (attempts, a, b) = race(isolation, None, neither).await;
            assert_eq!(attempts, 2, "{isolation}: the first was not retried");
            assert_eq!((a, b), (0, 1), "{isolation}: phantom");
        }
        let (attempts, a, b) = race(Isolation::ReadCommitted, None, neither).await;
        assert_eq!(
            (attempts, a, b),
            (1, 1, 1),
            "read committed allows the phantom"
        );
    }
}
