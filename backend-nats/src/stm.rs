//! STM: each key one subject, reads at a stream sequence, a commit one atomic batch
//! of compares and writes.
//!
//! An STM key `<name>` is the key `stm.<name>` (keys.rs's layout, so a purge of a
//! prefix removes its keys), its value the message's payload; a missing key or a
//! tombstone is no key. Every read records the key's last sequence (0: no message).
//! A commit is one atomic batch, stored wholly or not at all: each key written
//! carries `Nats-Expected-Last-Subject-Sequence` = the sequence it was read at (a
//! delete is a purge), and each key read and not written is checked by a message on
//! a scratch subject of its own (`stmc.<call>.<n>`, one second to live) whose
//! `Nats-Expected-Last-Subject-Sequence-Subject` points at the key. One failed compare
//! refuses the batch: nothing is written and the transaction is retried. A
//! transaction that writes nothing commits after one listing shows every key it read
//! still at its sequence.
//!
//! | level | reads | commit checks |
//! |---|---|---|
//! | `SerializableSnapshot` | as of the stream sequence of the first read (a later message retries, see below) | the read set, and the keys written at their sequence as of the snapshot |
//! | `Serializable` | as above | the read set |
//! | `RepeatableReads` | the latest value, cached | the read set |
//! | `ReadCommitted` | the latest value | none |
//!
//! The bucket keeps one message a key ([`crate::HISTORY`]), so a key's value at the
//! snapshot is its only message when that message is at or before the snapshot, and
//! unknown when the key was rewritten since: JetStream keeps no older revision. A read
//! after the first therefore reads the key's latest message (one request, as a read at
//! the snapshot would be), and a message after the snapshot makes the attempt retry
//! ([`StmRetry`]) on a newer snapshot, which the retry's `begin` takes with the key in
//! its prefetch. A body never sees as missing, or as older than it was, a key that
//! existed when its snapshot was taken, and never acts on a state that never was.

use distsync_core::raw::Make;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::{StmAttempt, StmEngine, StmRetry, Write as StmWrite};
use distsync_core::{Bytes, Isolation, Name, Result};

use crate::keys::{self, Kind};
use crate::shared::Shared;
use crate::store::Write;

// Reads take a key's latest message for its value at the snapshot (module docs).
const _: () = assert!(crate::HISTORY == 1);

/// How long a scratch compare's message is kept.
const SCRATCH_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The STM over the bucket.
pub(crate) struct NatsStm {
    shared: Arc<Shared>,
}

#[async_trait]
impl StmEngine for NatsStm {
    /// Reads the keys the previous attempt read in one listing, which is the
    /// snapshot of the serializable levels (ReadCommitted reads afresh each time).
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        let mut attempt = Attempt {
            shared: Arc::clone(&self.shared),
            isolation,
            snapshot: None,
            reads: BTreeMap::new(),
            prefetched: BTreeMap::new(),
        };
        if isolation != Isolation::ReadCommitted && !prefetch.is_empty() {
            let names: Vec<&Name> = prefetch.iter().collect();
            let (reads, last) = attempt.read_at(&names, None).await?;
            if attempt.snapshots() {
                attempt.snapshot = Some(last);
            }
            attempt.prefetched = reads;
        }
        Ok(Box::new(attempt))
    }
}

/// What a read saw of a key: its sequence (0: no message) and its value.
#[derive(Clone, Debug, Default)]
struct Read {
    seq: u64,
    value: Option<Bytes>,
}

/// One attempt of a transaction.
struct Attempt {
    shared: Arc<Shared>,
    isolation: Isolation,
    /// The stream sequence the serializable levels read at, set by the first read.
    snapshot: Option<u64>,
    reads: BTreeMap<Name, Read>,
    /// What `begin` read of the previous attempt's keys, by key: a read of one of
    /// them takes it from here.
    prefetched: BTreeMap<String, Read>,
}

impl Attempt {
    /// Whether reads are of one snapshot.
    fn snapshots(&self) -> bool {
        matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }

    /// The keys' last messages as of `up_to` (the latest with `None`), and the
    /// sequence that listing was read at.
    async fn read_at(
        &self,
        names: &[&Name],
        up_to: Option<u64>,
    ) -> Result<(BTreeMap<String, Read>, u64)> {
        let filters: Vec<String> = names
            .iter()
            .map(|name| keys::key(Kind::Stm, name))
            .collect();
        let (entries, last) = self.shared.store.list_at(&filters, up_to).await?;
        let mut reads: BTreeMap<String, Read> = filters
            .into_iter()
            .map(|key| (key, Read::default()))
            .collect();
        for entry in entries {
            let read = Read {
                seq: entry.seq,
                value: entry.live().then(|| entry.value.clone()),
            };
            reads.insert(entry.key, read);
        }
        Ok((reads, last))
    }
}

#[async_trait]
impl StmAttempt for Attempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if self.isolation != Isolation::ReadCommitted {
            if let Some(read) = self.reads.get(key) {
                return Ok(read.value.clone());
            }
        }
        if let Some(read) = self.prefetched.remove(&keys::key(Kind::Stm, key)) {
            let value = read.value.clone();
            self.reads.insert(key.clone(), read);
            return Ok(value);
        }
        // The latest message is the key's only one (see the module docs).
        let (mut reads, last) = self.read_at(&[key], None).await?;
        let read = reads.remove(&keys::key(Kind::Stm, key)).unwrap_or_default();
        let rewritten = match self.snapshot {
            Some(snapshot) if self.snapshots() => read.seq > snapshot,
            _ => {
                if self.snapshots() {
                    self.snapshot = Some(last);
                }
                false
            }
        };
        let value = read.value.clone();
        // Kept even when rewritten, so that the retry prefetches it.
        self.reads.insert(key.clone(), read);
        if rewritten {
            return Err(StmRetry.into());
        }
        Ok(value)
    }

    fn read_keys(&self) -> Vec<Name> {
        self.reads.keys().cloned().collect()
    }

    async fn commit(self: Box<Self>, writes: Vec<StmWrite>) -> Result<bool> {
        let store = &self.shared.store;
        let checks = self.isolation != Isolation::ReadCommitted;
        let written: BTreeMap<Name, Option<Bytes>> = writes.into_iter().collect();
        if written.is_empty() {
            if !checks || self.reads.is_empty() {
                return Ok(true);
            }
            let names: Vec<&Name> = self.reads.keys().collect();
            let (now, _) = self.read_at(&names, None).await?;
            let unchanged = self.reads.iter().all(|(name, read)| {
                now.get(&keys::key(Kind::Stm, name))
                    .is_some_and(|current| current.seq == read.seq)
            });
            return Ok(unchanged);
        }
        // The sequences the keys written but not read had at the snapshot.
        let mut at_snapshot = BTreeMap::new();
        if self.isolation == Isolation::SerializableSnapshot {
            if let Some(snapshot) = self.snapshot {
                let blind: Vec<&Name> = (written.keys())
                    .filter(|name| !self.reads.contains_key(*name))
                    .collect();
                if !blind.is_empty() {
                    at_snapshot = self.read_at(&blind, Some(snapshot)).await?.0;
                }
            }
        }
        let mut batch = Vec::new();
        for (name, value) in &written {
            let key = keys::key(Kind::Stm, name);
            let expected = if !checks {
                None
            } else if let Some(read) = self.reads.get(name) {
                Some(read.seq)
            } else {
                at_snapshot.get(&key).map(|read| read.seq)
            };
            let mut write = match value {
                Some(value) => Write::put(key.as_str(), value.clone()),
                None => Write::purge(key.as_str()),
            };
            if let Some(seq) = expected {
                write = write.if_at(seq);
            }
            batch.push(write);
        }
        if checks {
            let call = distsync_core::raw::call_id();
            let read_only = (self.reads.iter()).filter(|(name, _)| !written.contains_key(*name));
            for (n, (name, read)) in read_only.enumerate() {
                let subject = store.subject(&keys::key(Kind::Stm, name));
                batch.push(
                    Write::put(format!("stmc.{call}.{n}"), Bytes::new())
                        .if_other_at(&subject, read.seq)
                        .ttl(SCRATCH_TTL),
                );
            }
        }
        match store.batch(batch).await?.compared()? {
            Some(_) => Ok(true),
            None => Err(StmRetry.into()),
        }
    }
}

impl Make<Arc<Shared>, ()> for NatsStm {
    fn make(context: &Arc<Shared>, (): ()) -> Result<Self> {
        let shared = Arc::clone(context);
        Ok(Self { shared })
    }
}
