//! Compaction: the log keeps a bounded window of history. Reads and watches from
//! before the window fail with [`StoreError::Compacted`](distsync_kv::StoreError) or end
//! with [`WatchResponse::Compacted`](distsync_kv::kv::WatchResponse), as etcd's do.

use distsync_core::Result;
use distsync_kv::kv::Revision;
use sqlx::MySqlPool;

use distsync_kv::StoreError;

use crate::batch;
use crate::error::map;
use crate::schema::Tables;

/// How many revisions the store keeps readable when compacting on its own.
pub const DEFAULT_RETAINED_REVISIONS: i64 = 10_000;

/// How many revisions one compaction transaction covers.
const CHUNK: Revision = 1000;

/// How many superseded rows one `DELETE` of a compaction names.
const DELETES_PER_STATEMENT: usize = 500;

/// Makes `revision` the oldest readable one (nothing when it is not above the current
/// compaction point). The point moves first, in a transaction of its own, so a
/// reader that saw the old point reads in a snapshot that still holds the rows
/// deleted after it; then the log rows no read at or after `revision` needs go: per
/// key, the rows followed by another at or before `revision`, and the tombstones
/// before it. Returns the compaction point after the call.
///
/// Cancel safety: each statement is atomic; a cancelled call leaves rows that the
/// next compaction removes.
///
/// # Errors
/// [`StoreError::FutureRevision`] for a revision above the current one.
pub(crate) async fn compact(
    pool: &MySqlPool,
    tables: &Tables,
    revision: Revision,
) -> Result<Revision> {
    let (meta, log) = (&tables.meta, &tables.log);
    let (current, compacted): (Revision, Revision) = sqlx::query_as(&format!(
        "SELECT revision, compacted FROM {meta} WHERE id = 1"
    ))
    .fetch_one(pool)
    .await
    .map_err(map)?;
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        }
        .in_backend(crate::BACKEND));
    }
    if revision <= compacted {
        return Ok(compacted);
    }
    sqlx::query(&format!(
        "UPDATE {meta} SET compacted = GREATEST(compacted, ?) WHERE id = 1"
    ))
    .bind(revision)
    .execute(pool)
    .await
    .map_err(map)?;
    // In chunks of revisions, each its own READ COMMITTED transaction: no gap locks
    // (a REPEATABLE READ delete scanning the log would lock the gap where writers
    // append), and no chunk holds its row locks long.
    // Below the old point are only the rows earlier compactions kept (each key's
    // latest): one chunk, since a newer row may now supersede them.
    let mut from = 0;
    while from < revision {
        let to = if from < compacted {
            compacted
        } else {
            revision.min(from.saturating_add(CHUNK))
        };
        // Begun by statements of this crate's ([`batch::Open`]): a chunk cut off before
        // its commit closes its connection, rather than leaving it inside the transaction
        // for the pool to hand out.
        let mut open = batch::Open::new(pool.acquire().await.map_err(map)?);
        batch::run(
            open.conn(),
            &[
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
                "START TRANSACTION".to_owned(),
            ],
        )
        .await?;
        // The superseded rows are found first, each by one probe of the key index
        // (a semi-join stops at the first newer version), then deleted by their
        // primary keys: a `DELETE` joined to the newer versions would visit every
        // pair of versions of a key, quadratic in a busy key's history.
        let superseded: Vec<(Revision, i32)> = sqlx::query_as(&format!(
            "SELECT l.revision, l.sub FROM {log} l \
             WHERE l.revision >= ? AND l.revision < ? AND EXISTS \
                   (SELECT 1 FROM {log} n \
                     WHERE n.k = l.k AND n.revision > l.revision AND n.revision <= ?)"
        ))
        .bind(from)
        .bind(to)
        .bind(revision)
        .fetch_all(open.conn())
        .await
        .map_err(map)?;
        for rows in superseded.chunks(DELETES_PER_STATEMENT) {
            let keys: Vec<String> = rows
                .iter()
                .map(|(revision, sub)| format!("({revision}, {sub})"))
                .collect();
            sqlx::query(&format!(
                "DELETE FROM {log} WHERE (revision, sub) IN ({})",
                keys.join(", ")
            ))
            .execute(open.conn())
            .await
            .map_err(map)?;
        }
        sqlx::query(&format!(
            "DELETE FROM {log} WHERE revision >= ? AND revision < ? AND deleted = 1"
        ))
        .bind(from)
        .bind(to)
        .execute(open.conn())
        .await
        .map_err(map)?;
        batch::run(open.conn(), &["COMMIT".to_owned()]).await?;
        open.done();
        from = to;
    }
    tracing::debug!(backend = crate::BACKEND, revision, "compacted");
    Ok(revision)
}

/// Compacts to keep the last `retain` revisions readable.
///
/// Cancel safety: as [`compact`].
pub(crate) async fn keep_window(pool: &MySqlPool, tables: &Tables, retain: i64) -> Result<()> {
    let current: Revision = sqlx::query_scalar(&format!(
        "SELECT revision FROM {} WHERE id = 1",
        tables.meta
    ))
    .fetch_one(pool)
    .await
    .map_err(map)?;
    let oldest = current.saturating_sub(retain).saturating_add(1);
    if oldest > 1 {
        compact(pool, tables, oldest).await?;
    }
    Ok(())
}
