//! Software transactional memory, as etcd's Go `concurrency.STM`.
//!
//! Layout: STM key `k` is the store key `<ns>k` (raw keys, as Go's STM uses them; a
//! namespace keeps applications apart). Values are stored as given, with no lease.
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

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, KeyValue, Kv, Range, Revision, Txn, TxnOp};
use crate::name::Name;
use crate::stm::{Isolation, Stm, StmAttempt, Write};

use super::key::range_at;

/// A [`Stm`] over a [`Kv`] store.
pub(crate) struct KvStm {
    kv: Arc<dyn Kv>,
    namespace: String,
    capabilities: Capabilities,
}

impl KvStm {
    /// The STM over every key under `namespace`, offering the levels `capabilities`
    /// declares.
    pub(crate) fn new(kv: Arc<dyn Kv>, namespace: &str, capabilities: Capabilities) -> Self {
        Self {
            kv,
            namespace: namespace.to_owned(),
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
impl Stm for KvStm {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        if !self.capabilities.supports_isolation(isolation) {
            return Err(Error::unsupported(
                self.kv.backend(),
                format!("stm isolation {isolation}"),
            ));
        }
        let mut attempt = KvStmAttempt {
            kv: Arc::clone(&self.kv),
            namespace: self.namespace.clone(),
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
    namespace: String,
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
        format!("{}{}", self.namespace, key)
    }

    fn serializable(&self) -> bool {
        matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }

    /// Reads `keys` in one transaction (one revision) into the prefetch cache.
    async fn prefetch(&mut self, keys: &[Name]) -> Result<()> {
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
        let first_read = self.reads.is_empty();
        let read = match self.prefetched.remove(key) {
            Some(read) => read,
            None => {
                let mut range = Range::key(self.store_key(key));
                if let Some(snapshot) = self.snapshot {
                    range = range.at_revision(snapshot);
                }
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
