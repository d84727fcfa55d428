//! STM over versioned keys, committed by one compare-and-apply script.
//!
//! Every STM key is a hash `{<ns>stm}:k:<name>` with the value (`v`, absent once
//! deleted) and its mod revision (`r`); `{<ns>stm}:rev` counts commits. All of them
//! share one hash tag, so a transaction never spans Redis Cluster slots. A commit is
//! one script: it checks the revisions the isolation level asks for and, if they
//! hold, writes every key at the next revision. A deleted key keeps its hash as a
//! tombstone (`r` only), so that a deletion is a change a concurrent transaction sees.
//!
//! | level | reads | commit checks |
//! |---|---|---|
//! | `SerializableSnapshot` | the snapshot taken at the first read (revision R); a later read of a key changed after R is a conflict, retried | every key read or written is unchanged since R |
//! | `Serializable` | as above | every key read is unchanged since R |
//! | `RepeatableReads` | the latest value, cached | every key read still has the revision it was read at |
//! | `ReadCommitted` | the latest value | nothing |
//!
//! Redis keeps no old versions, so a snapshot read that finds a key newer than R
//! cannot be served and aborts the attempt instead (etcd would read at R): the result
//! is the same serializable outcome, with more retries under contention. The keys the
//! previous attempt read are fetched in one round trip when an attempt begins.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{Make, StmAttempt, StmEngine, StmRetry, Write};
use distsync_core::{Isolation, Name, Result};

use crate::error::{array, bytes, int, unexpected};
use crate::scripts::SCRIPTS;
use crate::store::Shared;

/// The Redis STM engine.
pub(crate) struct RedisStm {
    shared: Arc<Shared>,
}

#[async_trait]
impl StmEngine for RedisStm {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        let mut attempt = Attempt {
            shared: Arc::clone(&self.shared),
            isolation,
            snapshot: None,
            reads: HashMap::new(),
            order: Vec::new(),
        };
        if !prefetch.is_empty() && isolation != Isolation::ReadCommitted {
            let (revision, values) = attempt.read(prefetch).await?;
            attempt.snapshot = Some(revision);
            for (key, read) in prefetch.iter().zip(values) {
                attempt.remember(key, read);
            }
        }
        Ok(Box::new(attempt))
    }
}

/// A key's mod revision (0: never written) and value.
type Read = (i64, Option<Bytes>);

struct Attempt {
    shared: Arc<Shared>,
    isolation: Isolation,
    /// The snapshot revision R, set by the first read.
    snapshot: Option<i64>,
    reads: HashMap<Name, Read>,
    order: Vec<Name>,
}

impl Attempt {
    fn snapshot_level(&self) -> bool {
        matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }

    fn remember(&mut self, key: &Name, read: Read) {
        if self.reads.insert(key.clone(), read).is_none() {
            self.order.push(key.clone());
        }
    }

    /// Reads `keys` at one instant: the current revision and each key's state.
    async fn read(&self, keys: &[Name]) -> Result<(i64, Vec<Read>)> {
        let mut call = self.shared.script(&SCRIPTS.stm_read);
        call.key(self.shared.keys.stm_revision());
        for key in keys {
            call.key(self.shared.keys.stm_key(key));
        }
        let reply = self.shared.eval(&call).await?;
        let fields = array("stm_read", reply.clone())?;
        if fields.len() != 1 + 2 * keys.len() {
            return Err(unexpected("stm_read", &reply));
        }
        let mut fields = fields.into_iter();
        let revision = int("stm_read", &fields.next().unwrap_or_default())?;
        let mut reads = Vec::with_capacity(keys.len());
        while let (Some(modified), Some(value)) = (fields.next(), fields.next()) {
            reads.push((
                int("stm_read", &modified)?,
                bytes("stm_read", value)?.map(Bytes::from),
            ));
        }
        Ok((revision, reads))
    }
}

#[async_trait]
impl StmAttempt for Attempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if self.isolation != Isolation::ReadCommitted {
            if let Some((_, value)) = self.reads.get(key) {
                return Ok(value.clone());
            }
        }
        let (revision, mut reads) = self.read(std::slice::from_ref(key)).await?;
        let read = reads.pop().unwrap_or_default();
        if self.snapshot_level() {
            match self.snapshot {
                None => self.snapshot = Some(revision),
                Some(snapshot) if read.0 > snapshot => {
                    // Changed since the snapshot: this attempt cannot see it consistently.
                    return Err(StmRetry.into());
                }
                Some(_) => {}
            }
        }
        let value = read.1.clone();
        self.remember(key, read);
        Ok(value)
    }

    fn read_keys(&self) -> Vec<Name> {
        self.order.clone()
    }

    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool> {
        let mut checks: Vec<(&Name, &'static str, i64)> = Vec::new();
        match (self.isolation, self.snapshot) {
            (Isolation::SerializableSnapshot, Some(snapshot)) => {
                checks.extend(self.order.iter().map(|key| (key, "le", snapshot)));
                checks.extend(
                    writes
                        .iter()
                        .filter(|(key, _)| !self.reads.contains_key(key))
                        .map(|(key, _)| (key, "le", snapshot)),
                );
            }
            (Isolation::Serializable, Some(snapshot)) => {
                checks.extend(self.order.iter().map(|key| (key, "le", snapshot)));
            }
            (Isolation::RepeatableReads, _) => {
                checks.extend(
                    self.order
                        .iter()
                        .filter_map(|key| self.reads.get(key).map(|(rev, _)| (key, "eq", *rev))),
                );
            }
            _ => {}
        }
        if checks.is_empty() && writes.is_empty() {
            return Ok(true);
        }
        let mut call = self.shared.script(&SCRIPTS.stm_commit);
        call.key(self.shared.keys.stm_revision());
        call.arg(checks.len());
        for (key, op, revision) in &checks {
            call.key(self.shared.keys.stm_key(key))
                .arg(*op)
                .arg(*revision);
        }
        for (key, value) in &writes {
            call.key(self.shared.keys.stm_key(key));
            match value {
                Some(value) => call.arg("p").arg(value.as_ref()),
                None => call.arg("d"),
            };
        }
        let reply = self.shared.eval(&call).await?;
        match int("stm_commit", &reply)? {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(unexpected("stm_commit", &reply)),
        }
    }
}

impl Make<Arc<Shared>, ()> for RedisStm {
    fn make(shared: &Arc<Shared>, (): ()) -> Result<Self> {
        Ok(Self {
            shared: Arc::clone(shared),
        })
    }
}
