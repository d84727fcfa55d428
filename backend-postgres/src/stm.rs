//! STM on PostgreSQL transactions over the `kv` table.
//!
//! Each attempt is one transaction on a pooled connection; core's `atomically` buffers
//! the writes and retries on conflict. etcd's levels map to PostgreSQL's:
//!
//! | etcd level | PostgreSQL | conflicts detected |
//! |---|---|---|
//! | `SerializableSnapshot` | `SERIALIZABLE` | any serialization anomaly (SSI), including the write set changing since the snapshot |
//! | `Serializable` | `SERIALIZABLE` | as above: PostgreSQL has no weaker snapshot-serializable level |
//! | `RepeatableReads` | `REPEATABLE READ`, plus, at commit, `SELECT ... ORDER BY key FOR UPDATE` of the keys read or written, and a placeholder insert of each key read as absent | a key read or written changed since the snapshot, or a key read as absent created meanwhile (as etcd, which compares every key read, present or not) |
//! | `ReadCommitted` | `READ COMMITTED` | none: reads see the latest committed values, lost updates are possible (as on etcd) |
//!
//! `RepeatableReads` validates absent keys as etcd does: at commit, each key read as
//! absent (and not written) is inserted with `ON CONFLICT DO NOTHING` and deleted again
//! in the same transaction. In `REPEATABLE READ`, an insert that meets a row committed
//! after the snapshot fails with a serialization failure, and one that meets a row not
//! yet committed waits for it first; so two overlapping transactions that each read two
//! absent keys and create one of them cannot both commit. The placeholder is never
//! visible to anyone: it is deleted before the commit.
//!
//! Reads are cached per attempt, so re-reading a key gives the same value at every level
//! (as etcd's STM). A serialization failure (SQLSTATE 40001) or a deadlock (40P01), from a
//! read or from the commit, makes the attempt a conflict, and it is retried.
//!
//! Cancel safety: dropping an attempt rolls its transaction back; a dropped commit is
//! applied wholly or not at all.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{Make, StmAttempt, StmEngine, StmRetry, Write};
use distsync_core::{Error, Isolation, Name, Result};

use crate::connection::bounded::{within, Bounded};
use crate::connection::transaction::PgTransaction;
use crate::error::{is_conflict, map};
use crate::store::Shared;

pub(crate) struct PgStm {
    pub(crate) shared: Arc<Shared>,
}

struct PgAttempt {
    shared: Arc<Shared>,
    isolation: Isolation,
    tx: PgTransaction,
    /// Keys read (with the value seen), in read order.
    reads: Vec<Name>,
    cache: HashMap<Name, Option<Bytes>>,
}

/// A conflict inside a transaction body asks `atomically` to retry ([`StmRetry`]).
fn conflict_or(error: sqlx::Error) -> Error {
    if is_conflict(&error) {
        StmRetry.into()
    } else {
        map(error)
    }
}

fn begin_statement(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::SerializableSnapshot | Isolation::Serializable => {
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
        }
        Isolation::RepeatableReads => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
    }
}

#[async_trait]
impl StmEngine for PgStm {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        let tx = PgTransaction::begin(&self.shared.pool, Some(begin_statement(isolation)))
            .await
            .map_err(map)?;
        let mut attempt = PgAttempt {
            shared: Arc::clone(&self.shared),
            isolation,
            tx,
            reads: Vec::new(),
            cache: HashMap::new(),
        };
        if !prefetch.is_empty() && isolation != Isolation::ReadCommitted {
            attempt.fetch(prefetch).await?;
        }
        Ok(Box::new(attempt))
    }
}

impl PgAttempt {
    /// Reads `keys` in one round trip into the cache.
    async fn fetch(&mut self, keys: &[Name]) -> Result<()> {
        let wanted: Vec<&str> = keys.iter().map(Name::as_str).collect();
        let limit = self.shared.request_timeout();
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            &self
                .shared
                .sql("SELECT key, value FROM {s}.kv WHERE key = ANY($1)"),
        )
        .bind(&wanted)
        .fetch_all(Bounded::new(&mut *self.tx, limit))
        .await
        .map_err(conflict_or)?;
        let mut found: HashMap<String, Vec<u8>> = rows.into_iter().collect();
        for key in keys {
            if !self.cache.contains_key(key) {
                let value = found.remove(key.as_str()).map(Bytes::from);
                self.cache.insert(key.clone(), value);
                self.reads.push(key.clone());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StmAttempt for PgAttempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if let Some(value) = self.cache.get(key) {
            return Ok(value.clone());
        }
        self.fetch(std::slice::from_ref(key)).await?;
        Ok(self.cache.get(key).cloned().flatten())
    }

    fn read_keys(&self) -> Vec<Name> {
        self.reads.clone()
    }

    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool> {
        let mut this = *self;
        let limit = this.shared.request_timeout();
        let outcome = async {
            if this.isolation == Isolation::RepeatableReads {
                // REPEATABLE READ raises 40001 when a row locked here changed since the
                // snapshot. Every key read or written is locked FOR UPDATE in one sorted
                // statement: one global lock order, and no share-to-exclusive upgrade,
                // so concurrent commits queue instead of deadlocking.
                let mut keys: Vec<&str> = this
                    .reads
                    .iter()
                    .chain(writes.iter().map(|(key, _)| key))
                    .map(Name::as_str)
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                sqlx::query(
                    &this
                        .shared
                        .sql("SELECT 1 FROM {s}.kv WHERE key = ANY($1) ORDER BY key FOR UPDATE"),
                )
                .bind(&keys)
                .execute(Bounded::new(&mut *this.tx, limit))
                .await?;
                // Keys read as absent and not written: a created-meanwhile row makes the
                // placeholder insert fail with 40001 (see the module docs).
                let written: std::collections::HashSet<&str> =
                    writes.iter().map(|(key, _)| key.as_str()).collect();
                let mut absent: Vec<&str> = this
                    .reads
                    .iter()
                    .filter(|key| matches!(this.cache.get(*key), Some(None)))
                    .map(Name::as_str)
                    .filter(|key| !written.contains(key))
                    .collect();
                absent.sort_unstable();
                absent.dedup();
                if !absent.is_empty() {
                    sqlx::query(&this.shared.sql(
                        "INSERT INTO {s}.kv (key, value) \
                         SELECT k, ''::bytea FROM unnest($1::text[]) AS k ORDER BY k \
                         ON CONFLICT (key) DO NOTHING",
                    ))
                    .bind(&absent)
                    .execute(Bounded::new(&mut *this.tx, limit))
                    .await?;
                    // Every such row visible now is a placeholder of this transaction.
                    sqlx::query(&this.shared.sql("DELETE FROM {s}.kv WHERE key = ANY($1)"))
                        .bind(&absent)
                        .execute(Bounded::new(&mut *this.tx, limit))
                        .await?;
                }
            }
            let (mut put_keys, mut put_values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
            for (key, value) in &writes {
                match value {
                    Some(value) => {
                        put_keys.push(key.as_str());
                        put_values.push(value.as_ref());
                    }
                    None => deletes.push(key.as_str()),
                }
            }
            if !put_keys.is_empty() {
                sqlx::query(&this.shared.sql(
                    "INSERT INTO {s}.kv (key, value) \
                     SELECT * FROM unnest($1::text[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                ))
                .bind(&put_keys)
                .bind(&put_values)
                .execute(Bounded::new(&mut *this.tx, limit))
                .await?;
            }
            if !deletes.is_empty() {
                sqlx::query(&this.shared.sql("DELETE FROM {s}.kv WHERE key = ANY($1)"))
                    .bind(&deletes)
                    .execute(Bounded::new(&mut *this.tx, limit))
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let outcome = match outcome {
            Ok(()) => within(limit, this.tx.commit()).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(map(error)),
        }
    }
}
impl Make<Arc<Shared>, ()> for PgStm {
    fn make(shared: &Arc<Shared>, (): ()) -> Result<Self> {
        Ok(Self {
            shared: Arc::clone(shared),
        })
    }
}
