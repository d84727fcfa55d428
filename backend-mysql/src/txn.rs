//! One [`Txn`] as one MySQL transaction: the compares evaluated inside it, then the
//! chosen branch, every change under one new revision.
//!
//! A transaction that may write locks the revision row first (`SELECT … FOR
//! UPDATE`): writers run one at a time and commit in revision order, so a reader of
//! the log that has seen revision `r` committed has seen every revision below it.
//! Its reads (compares, ranges) come after that lock, so they see every earlier
//! commit. A transaction without a put or a delete in either branch takes no lock: it
//! reads one consistent snapshot.
//!
//! The lock is held for as few round trips as the transaction allows ([`crate::batch`]):
//! the start, the lock and the reads known before any op runs (the rows of every key
//! a compare, a put or a single-key delete of either branch names, and whether each
//! lease a put names is live) go as one batch; the writes wait in the transaction
//! until something must read after them (a range, a prefix delete) or until the end,
//! where they go with the log rows, the new revision and the commit as one more. A
//! lock's grant or release is then two round trips under the lock.

use std::collections::HashMap;

use bytes::Bytes;
use distsync_core::{Error, Result};
use distsync_kv::kv::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Revision, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchEvent,
};
use sqlx::{MySqlConnection, MySqlPool, Row};

use crate::batch;
use distsync_kv::StoreError;

use crate::error::map;
use crate::range::{self, key_string, KeyFilter};
use crate::schema::{Tables, MAX_KEY_BYTES};
use crate::BACKEND;

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
/// (a read-only one as sqlx rolls back a dropped transaction; a writing one closes
/// its connection, [`batch::Open`]); once the commit is sent, it may have been
/// applied.
pub(crate) async fn run(pool: &MySqlPool, tables: &Tables, txn: Txn) -> Result<Applied> {
    txn.check_branches()?;
    let writes = (txn.success.iter().chain(&txn.failure)).any(|op| !matches!(op, TxnOp::Range(_)));
    if !writes {
        return read_only(pool, tables, txn).await;
    }
    let mut open = batch::Open::new(pool.acquire().await.map_err(map)?);
    match write(open.conn(), tables, txn).await {
        Ok(applied) => {
            open.done();
            Ok(applied)
        }
        Err(error) => {
            open.rollback().await;
            Err(error)
        }
    }
}

/// A transaction without a put or a delete: one consistent snapshot, no lock.
async fn read_only(pool: &MySqlPool, tables: &Tables, txn: Txn) -> Result<Applied> {
    let mut tx = pool.begin_with(READ_ONLY).await.map_err(map)?;
    let (current, compacted): (Revision, Revision) = sqlx::query_as(&format!(
        "SELECT revision, compacted FROM {} WHERE id = 1",
        tables.meta
    ))
    .fetch_one(&mut *tx)
    .await
    .map_err(map)?;
    let succeeded = compare_all(&mut tx, tables, &txn.compares).await?;
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut apply = Apply::new(tables, current, compacted);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(apply.op(&mut tx, op).await?);
    }
    tx.commit().await.map_err(map)?;
    Ok(apply.finish(succeeded, responses, current))
}

/// What a writing transaction's first batch reads: the rows of these keys and
/// whether these leases are live.
fn known_in_advance(txn: &Txn) -> (Vec<&str>, Vec<LeaseId>) {
    let mut keys: Vec<&str> = txn.compares.iter().map(|c| c.key.as_str()).collect();
    let mut leases = Vec::new();
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put {
                key,
                lease,
                ignore_lease,
                ..
            } => {
                keys.push(key);
                if !ignore_lease && *lease != 0 {
                    leases.push(*lease);
                }
            }
            TxnOp::Delete { key, prefix: false } => keys.push(key),
            TxnOp::Delete { .. } | TxnOp::Range(_) => {}
        }
    }
    keys.retain(|key| !key.is_empty() && key.len() <= MAX_KEY_BYTES);
    keys.sort_unstable();
    keys.dedup();
    leases.sort_unstable();
    leases.dedup();
    (keys, leases)
}

/// The tags of the first batch's `SELECT`s ([`batch::tag`]).
const META: i64 = 0;
const ROW: i64 = 1;
const LIVE_LEASE: i64 = 2;

/// A transaction that may write, on `conn` (see the module docs for its batches).
async fn write(conn: &mut MySqlConnection, tables: &Tables, txn: Txn) -> Result<Applied> {
    let (keys, leases) = known_in_advance(&txn);
    let mut first = vec![
        "START TRANSACTION".to_owned(),
        format!(
            "SELECT {META}, revision, compacted FROM {} WHERE id = 1 FOR UPDATE",
            tables.meta
        ),
    ];
    if !keys.is_empty() {
        first.push(format!(
            "SELECT {ROW}, k, create_revision, mod_revision, version, lease FROM {} \
             WHERE k IN {}",
            tables.kv,
            batch::bytes_list(keys.iter().map(|key| key.as_bytes()))
        ));
    }
    if !leases.is_empty() {
        let ids: Vec<String> = leases.iter().map(ToString::to_string).collect();
        first.push(format!(
            "SELECT {LIVE_LEASE}, id FROM {} WHERE id IN ({}) AND expires_at > NOW(6)",
            tables.leases,
            ids.join(", ")
        ));
    }
    let mut meta = None;
    let mut known: HashMap<String, Option<Current>> =
        keys.iter().map(|key| ((*key).to_owned(), None)).collect();
    let mut live: HashMap<LeaseId, bool> = leases.iter().map(|id| (*id, false)).collect();
    for row in batch::run(conn, &first).await? {
        match batch::tag(&row)? {
            META => {
                let current: Revision = row.try_get(1).map_err(map)?;
                let compacted: Revision = row.try_get(2).map_err(map)?;
                meta = Some((current, compacted));
            }
            ROW => {
                let key = key_string(row.try_get(1).map_err(map)?)?;
                known.insert(key, Some(current_of(&row, 2)?));
            }
            _ => {
                live.insert(row.try_get(1).map_err(map)?, true);
            }
        }
    }
    let (current, compacted) =
        meta.ok_or_else(|| Error::backend(crate::BACKEND, "the revision row is missing"))?;
    let found: HashMap<String, Current> = known
        .iter()
        .filter_map(|(key, row)| row.map(|row| (key.clone(), row)))
        .collect();
    let succeeded = holds(&txn.compares, &found);
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut apply = Apply::new(tables, current, compacted);
    apply.known = known;
    apply.leases = live;
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(apply.op(conn, op).await?);
    }
    let revision = if apply.rows.is_empty() {
        current
    } else {
        apply.current + 1
    };
    let mut last = std::mem::take(&mut apply.pending);
    if !apply.rows.is_empty() {
        last.extend(log_rows(tables, revision, &apply.rows));
        last.push(format!(
            "UPDATE {} SET revision = {revision} WHERE id = 1",
            tables.meta
        ));
    }
    last.push("COMMIT".to_owned());
    batch::run(conn, &last).await?;
    Ok(apply.finish(succeeded, responses, revision))
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
    Ok(holds(compares, &found))
}

/// Whether every compare holds against `found`, the rows of the keys they name (a
/// key not there is missing).
fn holds(compares: &[Compare], found: &HashMap<String, Current>) -> bool {
    compares.iter().all(|compare| {
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
    })
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
    /// The rows of keys known inside the transaction (read in advance, or written by
    /// it; `None`: missing), so that a put or a delete of one reads nothing.
    known: HashMap<String, Option<Current>>,
    /// Writes not sent yet (see the module docs).
    pending: Vec<String>,
}

impl<'a> Apply<'a> {
    fn new(tables: &'a Tables, current: Revision, compacted: Revision) -> Self {
        Self {
            tables,
            current,
            compacted,
            next: current + 1,
            rows: Vec::new(),
            leases: HashMap::new(),
            known: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Sends the pending writes, before a statement that reads after them.
    async fn flush(&mut self, conn: &mut MySqlConnection) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        batch::run(conn, &pending).await.map(drop)
    }

    /// The answer, at `revision`, with the changes made.
    fn finish(
        self,
        succeeded: bool,
        mut responses: Vec<TxnOpResponse>,
        revision: Revision,
    ) -> Applied {
        for response in &mut responses {
            if let TxnOpResponse::Range(range) = response {
                range.revision = revision;
            }
        }
        let events = self
            .rows
            .into_iter()
            .map(|row| event(row, revision))
            .collect();
        Applied {
            response: TxnResponse {
                succeeded,
                responses,
                revision,
            },
            events,
        }
    }

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
                range.check(self.current, self.compacted, BACKEND)?;
                self.flush(conn).await?;
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
            return Err(Error::InvalidArgument(format!(
                "put: key of {} bytes is longer than the store's {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        let previous = match self.known.get(&key) {
            Some(known) => *known,
            None => {
                self.flush(conn).await?;
                sqlx::query(&format!(
                    "SELECT create_revision, mod_revision, version, lease FROM {} WHERE k = ?",
                    self.tables.kv
                ))
                .bind(key.as_bytes())
                .fetch_optional(&mut *conn)
                .await
                .map_err(map)?
                .map(|row| current_of(&row, 0))
                .transpose()?
            }
        };
        let lease = match (lease, previous) {
            (None, None) => return Err(StoreError::KeyNotFound(key).in_backend(BACKEND)),
            (None, Some(previous)) => previous.lease,
            (Some(lease), _) => {
                if lease != 0 && !self.lease_live(conn, lease).await? {
                    return Err(StoreError::LeaseNotFound(lease).in_backend(BACKEND));
                }
                lease
            }
        };
        let create_revision = previous.map_or(self.next, |p| p.create_revision);
        let version = previous.map_or(1, |p| p.version.saturating_add(1));
        self.pending.push(format!(
            "INSERT INTO {} (k, create_revision, mod_revision, version, lease, v) \
             VALUES ({}, {create_revision}, {}, {version}, {lease}, {}) ON DUPLICATE KEY UPDATE \
             create_revision = VALUES(create_revision), mod_revision = VALUES(mod_revision), \
             version = VALUES(version), lease = VALUES(lease), v = VALUES(v)",
            self.tables.kv,
            batch::bytes(key.as_bytes()),
            self.next,
            batch::bytes(&value),
        ));
        self.known.insert(
            key.clone(),
            Some(Current {
                create_revision,
                mod_revision: self.next,
                version,
                lease,
            }),
        );
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
        self.flush(conn).await?;
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
        if !prefix {
            if let Some(known) = self.known.get_mut(key) {
                if known.take().is_none() {
                    return Ok(0);
                }
                self.pending.push(format!(
                    "DELETE FROM {} WHERE k = {}",
                    self.tables.kv,
                    batch::bytes(key.as_bytes())
                ));
                self.rows.push(LogRow::tombstone(key.to_owned()));
                return Ok(1);
            }
        }
        self.flush(conn).await?;
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
            let key = key_string(key)?;
            self.known.insert(key.clone(), None);
            self.rows.push(LogRow::tombstone(key));
        }
        Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
    }
}

/// The statements that write a transaction's changes to the log, in their order
/// (`sub`), as literals for a batch.
pub(crate) fn log_rows(tables: &Tables, revision: Revision, rows: &[LogRow]) -> Vec<String> {
    // A statement well under the server's default max_allowed_packet.
    const CHUNK: usize = 1000;
    let mut statements = Vec::new();
    for (chunk_index, chunk) in rows.chunks(CHUNK).enumerate() {
        let values: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let sub = chunk_index * CHUNK + index;
                format!(
                    "({revision}, {sub}, {}, {}, {}, {}, {}, {})",
                    batch::bytes(row.key.as_bytes()),
                    row.create_revision,
                    row.version,
                    row.lease,
                    batch::bytes(&row.value),
                    u8::from(row.deleted)
                )
            })
            .collect();
        statements.push(format!(
            "INSERT INTO {} (revision, sub, k, create_revision, version, lease, v, deleted) \
             VALUES {}",
            tables.log,
            values.join(", ")
        ));
    }
    statements
}
