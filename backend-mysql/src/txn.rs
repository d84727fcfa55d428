//! One [`Txn`] as one MySQL transaction: the compares evaluated inside it, then the
//! chosen branch, every change under one new revision.
//!
//! A transaction that may write locks the revision row first (`SELECT … FOR
//! UPDATE`): writers run one at a time and commit in revision order, so a reader of
//! the log that has seen revision `r` committed has seen every revision below it.
//! Its reads (compares, ranges) come after that lock, so they see every earlier
//! commit. A transaction without a put or a delete in either branch takes no lock: it
//! reads one consistent snapshot.

use std::collections::HashMap;

use bytes::Bytes;
use distsync_core::{Error, Result};
use distsync_kv::kv::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Revision, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchEvent,
};
use sqlx::{MySqlConnection, MySqlPool, Row};

use crate::error::{map, StoreError};
use crate::range::{self, key_string, KeyFilter};
use crate::schema::{Tables, MAX_KEY_BYTES};

/// The statement that opens a read-only transaction on one snapshot.
pub(crate) const READ_ONLY: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// What a transaction did: its answer, and its changes if it made any.
pub(crate) struct Applied {
    /// The answer.
    pub(crate) response: TxnResponse,
    /// The changes, in order, if the transaction made any (all at
    /// `response.revision`).
    pub(crate) events: Vec<WatchEvent>,
}

/// One log row to write.
pub(crate) struct LogRow {
    key: String,
    create_revision: Revision,
    version: i64,
    lease: LeaseId,
    value: Bytes,
    deleted: bool,
}

impl LogRow {
    /// The deletion of `key`.
    pub(crate) fn tombstone(key: String) -> Self {
        Self {
            key,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
            deleted: true,
        }
    }
}

/// A key's current revisions and lease, from the `kv` table.
#[derive(Clone, Copy, Default)]
struct Current {
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: LeaseId,
}

/// Runs `txn` on `pool`.
///
/// Cancel safety: dropping the future before the commit rolls the transaction back
/// (sqlx rolls back a dropped transaction before the connection's next use); once
/// the commit is sent, it may have been applied.
pub(crate) async fn run(pool: &MySqlPool, tables: &Tables, txn: Txn) -> Result<Applied> {
    let writes = (txn.success.iter().chain(&txn.failure)).any(|op| !matches!(op, TxnOp::Range(_)));
    let mut tx = if writes {
        pool.begin().await.map_err(map)?
    } else {
        pool.begin_with(READ_ONLY).await.map_err(map)?
    };
    let lock = if writes { " FOR UPDATE" } else { "" };
    let (current, compacted): (Revision, Revision) = sqlx::query_as(&format!(
        "SELECT revision, compacted FROM {} WHERE id = 1{lock}",
        tables.meta
    ))
    .fetch_one(&mut *tx)
    .await
    .map_err(map)?;
    let succeeded = compare_all(&mut tx, tables, &txn.compares).await?;
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut apply = Apply {
        tables,
        current,
        compacted,
        next: current + 1,
        rows: Vec::new(),
        leases: HashMap::new(),
    };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(apply.op(&mut tx, op).await?);
    }
    let revision = if apply.rows.is_empty() {
        current
    } else {
        apply.current + 1
    };
    if !apply.rows.is_empty() {
        write_log(&mut tx, tables, revision, &apply.rows).await?;
        sqlx::query(&format!(
            "UPDATE {} SET revision = ? WHERE id = 1",
            tables.meta
        ))
        .bind(revision)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    }
    tx.commit().await.map_err(map)?;
    for response in &mut responses {
        if let TxnOpResponse::Range(range) = response {
            range.revision = revision;
        }
    }
    let events = apply
        .rows
        .into_iter()
        .map(|row| event(row, revision))
        .collect();
    Ok(Applied {
        response: TxnResponse {
            succeeded,
            responses,
            revision,
        },
        events,
    })
}

/// The watch event of a log row written at `revision`.
pub(crate) fn event_of(
    key: String,
    revision: Revision,
    create_revision: Revision,
    version: i64,
    lease: LeaseId,
    value: Bytes,
    deleted: bool,
) -> WatchEvent {
    if deleted {
        WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                mod_revision: revision,
                ..KeyValue::default()
            },
        }
    } else {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
                version,
                lease,
            },
        }
    }
}

/// The watch event of `row`, written at `revision`.
pub(crate) fn event(row: LogRow, revision: Revision) -> WatchEvent {
    event_of(
        row.key,
        revision,
        row.create_revision,
        row.version,
        row.lease,
        row.value,
        row.deleted,
    )
}

/// Whether every compare holds against the state after the revision lock (a missing
/// key has create and mod revision and version `0`).
async fn compare_all(
    conn: &mut MySqlConnection,
    tables: &Tables,
    compares: &[Compare],
) -> Result<bool> {
    if compares.is_empty() {
        return Ok(true);
    }
    let mut keys: Vec<&str> = compares.iter().map(|c| c.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let placeholders = vec!["?"; keys.len()].join(", ");
    let sql = format!(
        "SELECT k, create_revision, mod_revision, version, lease FROM {} WHERE k IN ({placeholders})",
        tables.kv
    );
    let mut query = sqlx::query(&sql);
    for key in &keys {
        query = query.bind(key.as_bytes());
    }
    let mut found = HashMap::new();
    for row in query.fetch_all(&mut *conn).await.map_err(map)? {
        let key = key_string(row.try_get(0).map_err(map)?)?;
        found.insert(key, current_of(&row, 1)?);
    }
    Ok(compares.iter().all(|compare| {
        let current = found.get(&compare.key).copied().unwrap_or_default();
        let actual = match compare.target {
            CompareTarget::CreateRevision => current.create_revision,
            CompareTarget::ModRevision => current.mod_revision,
            CompareTarget::Version => current.version,
        };
        match compare.op {
            CompareOp::Equal => actual == compare.value,
            CompareOp::NotEqual => actual != compare.value,
            CompareOp::Less => actual < compare.value,
            CompareOp::Greater => actual > compare.value,
        }
    }))
}

/// `create_revision, mod_revision, version, lease` from column `from` on.
fn current_of(row: &sqlx::mysql::MySqlRow, from: usize) -> Result<Current> {
    Ok(Current {
        create_revision: row.try_get(from).map_err(map)?,
        mod_revision: row.try_get(from + 1).map_err(map)?,
        version: row.try_get(from + 2).map_err(map)?,
        lease: row.try_get(from + 3).map_err(map)?,
    })
}

/// The branch being applied.
struct Apply<'a> {
    tables: &'a Tables,
    /// The revision before the transaction.
    current: Revision,
    compacted: Revision,
    /// The revision of this transaction's changes.
    next: Revision,
    /// Its changes so far.
    rows: Vec<LogRow>,
    /// The leases checked so far, and whether each is live.
    leases: HashMap<LeaseId, bool>,
}

impl Apply<'_> {
    async fn op(&mut self, conn: &mut MySqlConnection, op: TxnOp) -> Result<TxnOpResponse> {
        match op {
            TxnOp::Put {
                key,
                value,
                lease,
                ignore_lease,
            } => {
                self.put(conn, key, value, (!ignore_lease).then_some(lease))
                    .await?;
                Ok(TxnOpResponse::Put)
            }
            TxnOp::Delete { key, prefix } => {
                if key.is_empty() && !prefix {
                    return Err(Error::InvalidArgument(
                        "delete: key is not provided".to_owned(),
                    ));
                }
                Ok(TxnOpResponse::Delete(
                    self.delete(conn, &key, prefix).await?,
                ))
            }
            TxnOp::Range(range) => {
                range::check(&range, self.current, self.compacted)?;
                let dirty = !self.rows.is_empty();
                let revision = if dirty { self.next } else { self.current };
                Ok(TxnOpResponse::Range(
                    range::read(conn, self.tables, &range, (self.current, dirty), revision).await?,
                ))
            }
        }
    }

    /// Writes `key`; `lease: None` keeps the key's current lease.
    async fn put(
        &mut self,
        conn: &mut MySqlConnection,
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "put: key is not provided".to_owned(),
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::Invalid(format!(
                "put: key of {} bytes is longer than the store's {MAX_KEY_BYTES}",
                key.len()
            ))
            .into());
        }
        let previous = sqlx::query(&format!(
            "SELECT create_revision, mod_revision, version, lease FROM {} WHERE k = ?",
            self.tables.kv
        ))
        .bind(key.as_bytes())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map)?
        .map(|row| current_of(&row, 0))
        .transpose()?;
        let lease = match (lease, previous) {
            (None, None) => return Err(StoreError::KeyNotFound(key).into()),
            (None, Some(previous)) => previous.lease,
            (Some(lease), _) => {
                if lease != 0 && !self.lease_live(conn, lease).await? {
                    return Err(StoreError::LeaseNotFound(lease).into());
                }
                lease
            }
        };
        let create_revision = previous.map_or(self.next, |p| p.create_revision);
        let version = previous.map_or(1, |p| p.version.saturating_add(1));
        sqlx::query(&format!(
            "INSERT INTO {} (k, create_revision, mod_revision, version, lease, v) \
             VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
             create_revision = VALUES(create_revision), mod_revision = VALUES(mod_revision), \
             version = VALUES(version), lease = VALUES(lease), v = VALUES(v)",
            self.tables.kv
        ))
        .bind(key.as_bytes())
        .bind(create_revision)
        .bind(self.next)
        .bind(version)
        .bind(lease)
        .bind(value.as_ref())
        .execute(&mut *conn)
        .await
        .map_err(map)?;
        self.rows.push(LogRow {
            key,
            create_revision,
            version,
            lease,
            value,
            deleted: false,
        });
        Ok(())
    }

    /// Whether `lease` exists and has not expired on the server's clock.
    async fn lease_live(&mut self, conn: &mut MySqlConnection, lease: LeaseId) -> Result<bool> {
        if let Some(live) = self.leases.get(&lease) {
            return Ok(*live);
        }
        let live: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM {} WHERE id = ? AND expires_at > NOW(6)",
            self.tables.leases
        ))
        .bind(lease)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map)?;
        self.leases.insert(lease, live.is_some());
        Ok(live.is_some())
    }

    /// Deletes `key` or every key under it; how many existed.
    async fn delete(&mut self, conn: &mut MySqlConnection, key: &str, prefix: bool) -> Result<i64> {
        let filter = KeyFilter::new(key, prefix, None);
        let sql = format!(
            "SELECT k FROM {} WHERE {} ORDER BY k",
            self.tables.kv, filter.sql
        );
        let mut query = sqlx::query_scalar::<_, Vec<u8>>(&sql);
        for value in &filter.binds {
            query = query.bind(value);
        }
        let doomed = query.fetch_all(&mut *conn).await.map_err(map)?;
        if doomed.is_empty() {
            return Ok(0);
        }
        let sql = format!("DELETE FROM {} WHERE {}", self.tables.kv, filter.sql);
        let mut query = sqlx::query(&sql);
        for value in &filter.binds {
            query = query.bind(value);
        }
        query.execute(&mut *conn).await.map_err(map)?;
        let deleted = doomed.len();
        for key in doomed {
            self.rows.push(LogRow::tombstone(key_string(key)?));
        }
        Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
    }
}

/// Writes a transaction's changes to the log, in their order (`sub`).
pub(crate) async fn write_log(
    conn: &mut MySqlConnection,
    tables: &Tables,
    revision: Revision,
    rows: &[LogRow],
) -> Result<()> {
    // Well under the protocol's 65535 placeholders per statement.
    const CHUNK: usize = 1000;
    for (chunk_index, chunk) in rows.chunks(CHUNK).enumerate() {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO {} (revision, sub, k, create_revision, version, lease, v, deleted) \
             VALUES {values}",
            tables.log
        );
        let mut query = sqlx::query(&sql);
        for (index, row) in chunk.iter().enumerate() {
            let sub = i32::try_from(chunk_index * CHUNK + index).unwrap_or(i32::MAX);
            query = query
                .bind(revision)
                .bind(sub)
                .bind(row.key.as_bytes())
                .bind(row.create_revision)
                .bind(row.version)
                .bind(row.lease)
                .bind(row.value.as_ref())
                .bind(row.deleted);
        }
        query.execute(&mut *conn).await.map_err(map)?;
    }
    Ok(())
}
