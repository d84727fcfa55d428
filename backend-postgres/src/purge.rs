//! Counting and removing the rows of every primitive under a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! Every table of the layout (`schema.rs`) that holds a name is visited, with the
//! column holding it. The semaphore lines
//! and the unfair lock's waiters hang off `lock_names` by id. Removing names folds their fencing counters into
//! `token_floor` first, as pruning does, so a name used again never goes backwards.
//! Sessions belong to no name: a purge leaves live ones alone and ends those already
//! expired, as every client's sweep does, so that a holder that was killed leaves no
//! row behind once its TTL has passed (a schema with no client left sweeps nothing).

use distsync_core::{Name, Result};

use crate::connection::transaction::{PgTransaction, READ_ONLY};
use crate::error::map;
use crate::store::{LockKind, Shared};

/// The tables holding a name, and the column that holds it. `lock_names` comes apart
/// (see [`purge_names`]).
const TABLES: [(&str, &str); 13] = [
    ("barriers", "name"),
    ("double_barrier_entries", "name"),
    ("double_barriers", "name"),
    ("election_leaders", "election"),
    ("election_log", "election"),
    ("queue_items", "queue"),
    ("queue_inflight", "queue"),
    ("queue_waiters", "queue"),
    ("queue_dedup", "queue"),
    ("rate_limits", "name"),
    ("kv", "key"),
    ("counters", "name"),
    ("latches", "name"),
];

/// The rows of `lock_names` under the prefix, and what hangs off them.
const NAMES_UNDER: &str = "SELECT id FROM {s}.lock_names WHERE name = $1 OR starts_with(name, $2)";

/// `$1` and `$2` of every statement: the prefix, and the prefix with a slash.
fn binds(prefix: &Name) -> (String, String) {
    (prefix.as_str().to_owned(), format!("{prefix}/"))
}

/// The rows of `table` whose `column` holds the prefix (`$1`) or a name under it (`$2`).
fn rows_under(table: &str, column: &str) -> String {
    format!("{{s}}.{table} WHERE {column} = $1 OR starts_with({column}, $2)")
}

/// The one number that `sql` (bound to the prefix's `$1` and `$2`) counts, in `tx`.
async fn count_in(tx: &mut PgTransaction, sql: &str, exact: &str, under: &str) -> Result<i64> {
    sqlx::query_scalar(sql)
        .bind(exact)
        .bind(under)
        .fetch_one(&mut **tx)
        .await
        .map_err(map)
}

/// How many rows the deletion `sql` (bound to the prefix's `$1` and `$2`) deletes, in
/// `tx`.
async fn delete_in(tx: &mut PgTransaction, sql: &str, exact: &str, under: &str) -> Result<i64> {
    let done = sqlx::query(sql)
        .bind(exact)
        .bind(under)
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    Ok(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX))
}

/// How many rows [`purge_prefix`] would delete: a solo holder is state of its name's
/// row, not a row of its own.
pub(crate) async fn count_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let (exact, under) = binds(prefix);
    let mut tx = PgTransaction::begin(&shared.pool, Some(READ_ONLY))
        .await
        .map_err(map)?;
    let mut total = 0_i64;
    for (table, column) in TABLES {
        let sql = shared.sql(&format!(
            "SELECT count(*) FROM {}",
            rows_under(table, column)
        ));
        total += count_in(&mut tx, &sql, &exact, &under).await?;
    }
    let names = shared.sql(&format!(
        "SELECT (SELECT count(*) FROM ({NAMES_UNDER}) n)
              + (SELECT count(*) FROM {{s}}.semaphores WHERE name_id IN ({NAMES_UNDER}))
              + (SELECT count(*) FROM {{s}}.semaphore_entries WHERE name_id IN ({NAMES_UNDER}))
              + (SELECT count(*) FROM {{s}}.unfair_waiters WHERE name_id IN ({NAMES_UNDER}))"
    ));
    total += count_in(&mut tx, &names, &exact, &under).await?;
    tx.commit().await.map_err(map)?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Deletes the names under the prefix with their semaphore lines and unfair waiters, folding their
/// fencing counters into `token_floor`; returns the rows deleted and the names.
async fn purge_names(
    shared: &Shared,
    tx: &mut PgTransaction,
    exact: &str,
    under: &str,
) -> Result<(i64, Vec<(String, String)>)> {
    sqlx::query(&shared.sql("SELECT 1 FROM {s}.token_floor FOR UPDATE"))
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    let mut deleted = 0_i64;
    // The unfair waiters first, so that the entries' deletion finds none to wake.
    for table in ["unfair_waiters", "semaphore_entries", "semaphores"] {
        let sql = shared.sql(&format!(
            "DELETE FROM {{s}}.{table} WHERE name_id IN ({NAMES_UNDER})"
        ));
        deleted += delete_in(tx, &sql, exact, under).await?;
    }
    let gone: Vec<(String, String, i64)> = sqlx::query_as(&shared.sql(&format!(
        "DELETE FROM {} RETURNING kind, name, token",
        rows_under("lock_names", "name")
    )))
    .bind(exact)
    .bind(under)
    .fetch_all(&mut **tx)
    .await
    .map_err(map)?;
    if let Some(top) = gone.iter().map(|(_, _, token)| *token).max() {
        sqlx::query(&shared.sql("UPDATE {s}.token_floor SET floor = greatest(floor, $1)"))
            .bind(top)
            .execute(&mut **tx)
            .await
            .map_err(map)?;
    }
    deleted += i64::try_from(gone.len()).unwrap_or(i64::MAX);
    Ok((
        deleted,
        gone.into_iter()
            .map(|(kind, name, _)| (kind, name))
            .collect(),
    ))
}

/// Deletes every row of the primitives under `prefix`, in one transaction, and
/// returns how many it deleted; then ends the sessions already expired (not counted).
pub(crate) async fn purge_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let (exact, under) = binds(prefix);
    let mut tx = PgTransaction::begin(&shared.pool, None)
        .await
        .map_err(map)?;
    let mut total = 0_i64;
    for (table, column) in TABLES {
        let sql = shared.sql(&format!("DELETE FROM {}", rows_under(table, column)));
        total += delete_in(&mut tx, &sql, &exact, &under).await?;
    }
    let (names, forgotten) = purge_names(shared, &mut tx, &exact, &under).await?;
    total += names;
    tx.commit().await.map_err(map)?;
    // Not counted: the sessions are no name's entries (`count_prefix` skips them too).
    let ended = shared.end_expired_sessions().await?;
    if ended > 0 {
        tracing::debug!(sessions = ended, "the purge ended expired sessions");
    }
    // The client's cache of name ids must not hand out an id whose row is gone.
    for (kind, name) in forgotten {
        let kind = [
            LockKind::Lock,
            LockKind::RwLock,
            LockKind::Election,
            LockKind::Semaphore,
        ]
        .into_iter()
        .find(|known| known.as_str() == kind);
        if let Some(kind) = kind {
            shared.forget_name(kind, &name);
        }
    }
    tracing::debug!(%prefix, deleted = total, "purged a name prefix");
    Ok(u64::try_from(total).unwrap_or(0))
}
