//! Leases: a row each, `(id, ttl_us, expires_at)`, its expiry on the server's clock
//! (`NOW(6)`), never a client's. A renewal extends a lease that has not expired yet;
//! a revoke, or the expiry of a lease, deletes its keys in one revisioned
//! transaction, as etcd's lessor does.

use std::collections::HashSet;
use std::time::Duration;

use distsync_core::raw::{random_u64, BatchRenewed};
use distsync_core::{Error, Result};
use distsync_kv::kv::{LeaseId, Revision, WatchEvent};
use sqlx::{Executor as _, MySqlConnection, MySqlPool, Row};

use crate::batch;
use crate::error::map;
use crate::optimistic::{self, Seen};
use crate::range::key_string;
use crate::schema::{live_leases, Tables};
use crate::txn::{event, log_rows, LogRow};
use crate::BACKEND;

/// How many times a grant draws a new id when the one drawn is taken.
const GRANT_TRIES: usize = 3;

/// A fresh lease id: 63 random bits of core's random source, never `0`.
fn fresh_id() -> LeaseId {
    LeaseId::try_from(random_u64() >> 1).unwrap_or(1).max(1)
}

/// Grants a lease of `ttl` (at least a millisecond), expiring `ttl` after the
/// server's `NOW(6)`.
///
/// Cancel safety: a grant whose reply is lost leaves a lease nobody renews, which
/// expires after `ttl`.
pub(crate) async fn grant(pool: &MySqlPool, tables: &Tables, ttl: Duration) -> Result<LeaseId> {
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX).max(1000);
    for _ in 0..GRANT_TRIES {
        let id = fresh_id();
        let sql = format!(
            "INSERT IGNORE INTO {} (id, ttl_us, expires_at) \
             VALUES (?, ?, NOW(6) + INTERVAL ? MICROSECOND)",
            tables.leases
        );
        let insert = || {
            sqlx::query(&sql)
                .bind(id)
                .bind(ttl_us)
                .bind(ttl_us)
                .execute(pool)
        };
        let inserted = match insert().await {
            // The store forgot (see `renew`): its tables again, then the grant.
            Err(error) if crate::error::is_missing_table(&error) => {
                tables.create(pool).await?;
                insert().await.map_err(map)?
            }
            inserted => inserted.map_err(map)?,
        };
        if inserted.rows_affected() == 1 {
            return Ok(id);
        }
    }
    Err(Error::backend(BACKEND, "could not draw an unused lease id"))
}

/// The most leases one renewal statement names (a list of decimals, well inside any
/// server's `max_allowed_packet`).
pub(crate) const MAX_RENEWALS: usize = 5_000;

/// Renews the leases `ids` that have not expired, together, on one connection of
/// `pool`: one statement extends them and a second reads which it extended, in one
/// round trip (see [`distsync_core::raw::RenewalBatch`], which hands each session its
/// answer). Every lease outside the answer has expired, was revoked or was never
/// granted.
///
/// Each statement commits on its own. A lease the update extended expires a TTL after
/// the update, so the read right after still finds it live; one it did not extend had
/// expired before the update, or is gone, so the read does not find it live either. No
/// other writer extends a lease (a lease is one session's, renewed by one process).
///
/// The batch is bounded by `timeout` (the request timeout, as the pool's wait for a
/// connection is): every later renewal of the process waits for it, so a connection
/// that stops answering (a silent partition) fails the batch, and is closed rather than
/// handed back to the pool, instead of holding every session's renewal until the
/// kernel gives up on it.
///
/// A store that forgot (no leases table) has its tables created again (so that its
/// clients read the epoch marker of the store as it is now, see the crate docs, "When
/// the store forgets"), and every lease of the batch is gone.
pub(crate) async fn renew(
    pool: MySqlPool,
    tables: Tables,
    timeout: Duration,
    ids: Vec<LeaseId>,
) -> BatchRenewed<LeaseId> {
    let (leases, live) = (&tables.leases, live_leases(&ids));
    let statements = [
        format!(
            "UPDATE {leases} SET expires_at = NOW(6) + INTERVAL ttl_us MICROSECOND WHERE {live}"
        ),
        format!("SELECT id FROM {leases} WHERE {live}"),
    ];
    let renewed = async {
        let mut conn = pool.acquire().await?;
        // A text query: the server runs both statements in order, and the list's
        // length varies, which would leave a prepared statement per length.
        let sql = statements.join(";\n");
        let rows = tokio::time::timeout(timeout, conn.fetch_all(sql.as_str()))
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?} (`timeout=` in the URL)"),
                )))
            })
            .inspect_err(|_| conn.close_on_drop())?;
        rows.iter()
            .map(|row| row.try_get::<LeaseId, _>(0))
            .collect::<sqlx::Result<HashSet<LeaseId>>>()
    };
    let renewed = match renewed.await {
        Ok(renewed) => Ok(renewed),
        Err(error) if crate::error::is_missing_table(&error) => {
            tracing::warn!(
                backend = BACKEND,
                "the leases table is missing: the store forgot; creating the tables again"
            );
            match tables.create(&pool).await {
                Ok(()) => Ok(HashSet::new()),
                Err(error) => Err(format!("renewing the session failed: {error}")),
            }
        }
        Err(error) => {
            let error = map(error);
            tracing::warn!(backend = BACKEND, sessions = ids.len(), %error, "renewing sessions failed");
            Err(format!("renewing the session failed: {error}"))
        }
    };
    BatchRenewed {
        renewed,
        then: None,
    }
}

/// How long `lease` has left on the server's clock: its deadline less `NOW(6)`, in one
/// statement; `None` when it has expired, was revoked or was never granted, or when the
/// store forgot every lease (no leases table: see [`renew`]).
///
/// Cancel safety: cancel-safe; it only reads.
pub(crate) async fn time_to_live(
    pool: &MySqlPool,
    tables: &Tables,
    lease: LeaseId,
) -> Result<Option<Duration>> {
    let left: Option<i64> = match sqlx::query_scalar(&format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) FROM {} \
         WHERE id = ? AND expires_at > NOW(6)",
        tables.leases
    ))
    .bind(lease)
    .fetch_optional(pool)
    .await
    {
        Err(error) if crate::error::is_missing_table(&error) => None,
        left => left.map_err(map)?,
    };
    Ok(left.map(micros))
}

/// A span of the server's in microseconds, `0` if it is negative.
fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

/// Ends `lease` and deletes its keys in one revision (none if it had no keys);
/// `expired_only`: only if it has expired on the server's clock (the reaper's call,
/// which another reaper may have made first: it then changes nothing). Returns the
/// revision and the deletions, if any.
///
/// Two round trips, neither waiting on the client under the revision lock
/// ([`crate::optimistic`]): first the lease's keys (read on their own, before the
/// transaction) and the claim of the lease's row in a new transaction; then the
/// locked batch, which checks that the lease's keys are still those read, deletes
/// the lease and its keys, writes the log and the new revision, and commits. When a
/// put gave the lease a key in between, nothing is written and the call starts
/// again, at most [`optimistic::TRIES`] times ([`Error::Connection`] then).
///
/// The lease's row is locked before the revision row, in every call that locks both
/// (a renewal locks the lease's row alone, a put only reads it), so no two calls
/// wait on each other. A reaper skips a lease whose row another call holds (`SKIP
/// LOCKED`; how reapers race: the crate docs, "Leases"). A claim holds the lease's row
/// across a round trip, which only a renewal of that same lease, ending anyway,
/// would wait for.
///
/// Cancel safety: dropping the future before the commit rolls it back (its
/// connection is closed, [`batch::Open`]).
pub(crate) async fn end(
    pool: &MySqlPool,
    tables: &Tables,
    lease: LeaseId,
    expired_only: bool,
) -> Result<Option<(Revision, Vec<WatchEvent>)>> {
    let mut open = batch::Open::new(pool.acquire().await.map_err(map)?);
    for _ in 0..optimistic::TRIES {
        match end_on(open.conn(), tables, lease, expired_only).await {
            Ok(Attempt::Changed) => tracing::debug!(
                backend = BACKEND,
                lease,
                "a lease's keys changed before its end: reading again"
            ),
            Ok(Attempt::Ended(outcome)) => {
                open.done();
                return Ok(outcome);
            }
            Err(error) => {
                open.rollback().await;
                return Err(error);
            }
        }
    }
    open.done();
    Err(optimistic::exhausted("ending a lease"))
}

/// How one attempt of [`end`] went.
enum Attempt {
    /// It ended the lease (with the revision and the deletions, if it had keys), or
    /// found nothing to end.
    Ended(Option<(Revision, Vec<WatchEvent>)>),
    /// The lease's keys changed before the revision lock: nothing was written.
    Changed,
}

/// The tags of [`end_on`]'s `SELECT`s ([`batch::tag`]; the outcome's is
/// [`optimistic::OUTCOME`]).
const CLAIM: i64 = 1;
const KEY: i64 = 2;

/// One attempt of [`end`], on one connection, which it leaves outside a
/// transaction.
async fn end_on(
    conn: &mut MySqlConnection,
    tables: &Tables,
    lease: LeaseId,
    expired_only: bool,
) -> Result<Attempt> {
    let lock = if expired_only {
        " AND expires_at <= NOW(6) FOR UPDATE SKIP LOCKED"
    } else {
        " FOR UPDATE"
    };
    // The keys are read before the transaction starts: a read inside it would fix its
    // snapshot before the revision lock, and the check under the lock must see every
    // commit before the lock. The claim is a locking read, which fixes no snapshot.
    let (kv, leases) = (&tables.kv, &tables.leases);
    let first = [
        format!("SELECT {KEY}, k FROM {kv} WHERE lease = {lease} ORDER BY k"),
        "START TRANSACTION".to_owned(),
        format!("SELECT {CLAIM}, id FROM {leases} WHERE id = {lease}{lock}"),
    ];
    let mut claimed = false;
    let mut keys = Vec::new();
    for row in batch::run(conn, &first).await? {
        if batch::tag(&row)? == CLAIM {
            claimed = true;
        } else {
            keys.push(key_string(row.try_get(1).map_err(map)?)?);
        }
    }
    if !claimed {
        batch::run(conn, &["ROLLBACK".to_owned()]).await?;
        return Ok(Attempt::Ended(None));
    }
    let seen = Seen {
        sets: vec![(format!("lease = {lease}"), keys.clone())],
        ..Seen::default()
    };
    let rows: Vec<LogRow> = keys.into_iter().map(LogRow::tombstone).collect();
    let mut body = vec![format!("DELETE FROM {leases} WHERE id = {lease} AND @ok")];
    if !rows.is_empty() {
        body.push(format!("DELETE FROM {kv} WHERE lease = {lease} AND @ok"));
        body.extend(log_rows(tables, &rows));
    }
    let answer = batch::run(
        conn,
        &optimistic::locked(tables, &seen.condition(tables), body, !rows.is_empty()),
    )
    .await?;
    let (outcome, _) = optimistic::sort(&answer)?;
    let Some(revision) = optimistic::outcome(outcome)? else {
        return Ok(Attempt::Changed);
    };
    if rows.is_empty() {
        return Ok(Attempt::Ended(None));
    }
    let events = rows.into_iter().map(|row| event(row, revision)).collect();
    Ok(Attempt::Ended(Some((revision, events))))
}

/// The leases expired on the server's clock, oldest first, at most `limit`.
///
/// Cancel safety: cancel-safe; it only reads.
pub(crate) async fn expired(pool: &MySqlPool, tables: &Tables, limit: u32) -> Result<Vec<LeaseId>> {
    sqlx::query_scalar(&format!(
        "SELECT id FROM {} WHERE expires_at <= NOW(6) ORDER BY expires_at LIMIT {limit}",
        tables.leases
    ))
    .fetch_all(pool)
    .await
    .map_err(map)
}

/// How long until the next lease expires, on the server's clock, and the shortest
/// TTL of a live lease; `None` without leases.
///
/// Cancel safety: cancel-safe; it only reads.
pub(crate) async fn next_expiry(
    pool: &MySqlPool,
    tables: &Tables,
) -> Result<Option<(Duration, Duration)>> {
    let (until, shortest): (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), MIN(expires_at)), MIN(ttl_us) FROM {}",
        tables.leases
    ))
    .fetch_one(pool)
    .await
    .map_err(map)?;
    Ok(until
        .zip(shortest)
        .map(|(until, shortest)| (micros(until), micros(shortest))))
}
