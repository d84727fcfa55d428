//! The tables and functions of the backend (`sql/*.sql`), created on first use in the
//! configured schema, and the layout marker that tells a client whether it can use them.
//!
//! Creation runs in one transaction holding a transaction-level advisory lock (the only
//! advisory lock the backend takes), so concurrent first users take turns. Nothing needs
//! a superuser: the role needs `CREATE` on the database (or an existing schema it owns),
//! and `plpgsql`, which every PostgreSQL has. PostgreSQL 14 or later is required
//! (`CREATE OR REPLACE TRIGGER`).
//!
//! # The layout marker
//! The one row of `layout` holds the layout version of the schema's objects, written in
//! the transaction that creates them. A client reads it when it connects:
//! - no marker: it creates the objects and writes [`LAYOUT_VERSION`];
//! - its own version: it uses the schema as it is, creating nothing (a role that may only
//!   use the objects connects too);
//! - a newer version: the schema was written by a newer, incompatible client; it is
//!   refused with [`Error::IncompatibleLayout`] and left untouched;
//! - an older version: refused with [`Error::Unsupported`] and left untouched. Nothing
//!   upgrades a schema in place: the message says to drop it (or to point the client at
//!   another one), and `distsync migrate` moves its state to a new schema
//!   (docs/MIGRATING.md).
//!
//! # Layout
//! - `sessions` (`sql/sessions.sql`): one heartbeat row per session (a random id, TTL,
//!   `expires_at`), renewed in batches by the backend's heartbeat
//!   ([`crate::connection::heartbeat`]). A session holds no connection: everything it
//!   holds or waits for is a row tied to this one (deleted with it), and counts until the
//!   row is deleted or expires (the lease gate, see [`crate::waiter_line`]).
//! - `lock_names` and `token_floor` (`sql/names.sql`): the names of locks, read-write
//!   locks, elections and semaphores, with each name's fencing counter; unused names are
//!   pruned, their counters folded into `token_floor` first so that a name registered
//!   again never goes backwards (see [`crate::limits`]).
//! - `semaphores` and `semaphore_entries` (`sql/waiter_line.sql`): the line of every
//!   name, one entry row per acquisition ([`crate::waiter_line`]); `sem_grant`
//!   (`sql/sem_grant.sql`), the grants of a release, whose wake-ups carry the token and
//!   which elect the next candidate in the release's transaction; the guarded write
//!   (`sql/guarded.sql`, for `LockGuard::put_if_held`) checks an entry and writes `kv` in
//!   one statement.
//! - `election_leaders` (the current leader, tied to its session) and `election_log`
//!   (every win and proclaim, for `observe`; trimmed per election and pruned by age).
//! - `queue_items`, `queue_inflight` and `queue_waiters`; `barriers`, `double_barriers`
//!   and `double_barrier_entries`; `kv` (STM).
//! - `queue_dedup` (`sql/queue_dedup.sql`): enqueues' idempotency records (see
//!   `queue.rs`).
//! - `epoch_marker` (`sql/epoch_marker.sql`): the one row that tells a store that forgot
//!   from the one a client knew (see [`crate::amnesia`]).
//! - `grant_sentinel` (`sql/unflushed_grants.sql`): an unlogged row that a crash of the
//!   server empties, and the gate of every grant of a client with unflushed grants (see
//!   [`crate::unflushed_grants`]).
//! - `rate_limits` and the function `rate_limit` (`sql/rate_limiter.sql`): each rate
//!   limiter's theoretical arrival time (see `rate_limiter.rs`).
//! - `counters`, `latches` and the function `latch_count_down` (`sql/counter.sql`, see
//!   `counter.rs`).
//! - the sequence `transaction_lock_tokens` (`sql/transaction_locks.sql`): the fencing
//!   tokens of transaction locks (see `transaction_lock.rs`).
//! - `unfair_waiters` and the functions and triggers of the unfair lock
//!   (`sql/unfair_lock.sql`, see [`crate::unfair_lock`]).
//!
//! Changes are announced with `NOTIFY` on the channel `distsync_<schema oid>` (payload
//! `<kind>:<name>`: `q` queue, `b` barrier, `d` double barrier, `e` election; `s:<id>`
//! when a session is ended; `m:<session>.<entry>` when a waiting entry may be granted,
//! `M:<name id>` when all of a name's waiters must re-check), by triggers and functions,
//! so they are delivered at commit.

use std::time::Duration;

use distsync_core::{Error, Result};
use sqlx::postgres::types::Oid;
use sqlx::postgres::PgConnection;
use sqlx::{Executor, PgPool};

use crate::connection::transaction::PgTransaction;
use crate::error::{map, BACKEND};

/// The layout version of the schema's tables and functions that this client reads and
/// writes. A schema marked with another version is refused (see the module docs).
pub const LAYOUT_VERSION: u32 = 3;

/// The DDL, in the order it runs; `{s}` stands for the quoted schema name.
const DDL: [&str; 18] = [
    include_str!("../sql/layout.sql"),
    include_str!("../sql/sessions.sql"),
    include_str!("../sql/names.sql"),
    include_str!("../sql/waiter_line.sql"),
    include_str!("../sql/sem_grant.sql"),
    include_str!("../sql/guarded.sql"),
    include_str!("../sql/election.sql"),
    include_str!("../sql/queue.sql"),
    include_str!("../sql/barriers.sql"),
    include_str!("../sql/stm.sql"),
    include_str!("../sql/server_epoch.sql"),
    include_str!("../sql/rate_limiter.sql"),
    include_str!("../sql/queue_dedup.sql"),
    include_str!("../sql/epoch_marker.sql"),
    include_str!("../sql/unflushed_grants.sql"),
    include_str!("../sql/counter.sql"),
    include_str!("../sql/transaction_locks.sql"),
    include_str!("../sql/unfair_lock.sql"),
];

/// Quotes a validated schema name as an SQL identifier.
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// `template` with `{s}` replaced by the quoted schema.
pub(crate) fn render(template: &str, quoted_schema: &str) -> String {
    template.replace("{s}", quoted_schema)
}

/// `duration` in whole milliseconds, the unit of the schema's durations (`ttl_ms`
/// columns, `$n * interval '1 millisecond'`). One beyond `bigint` (292 million years)
/// saturates: no bound is meant to last that long.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Checks the schema's layout marker, creating the schema's objects if it has none;
/// the schema's OID (its notification channel is `distsync_<oid>`).
///
/// # Errors
/// [`Error::IncompatibleLayout`] for a schema of a newer layout, [`Error::Unsupported`]
/// for one of an older layout (both left untouched), and the database's errors.
///
/// # Cancel safety
/// Cancel-safe: the objects are created in one transaction, rolled back if dropped.
pub(crate) async fn ensure(pool: &PgPool, schema: &str) -> Result<u32> {
    let quoted = quote(schema);
    let found = {
        let mut conn = pool.acquire().await.map_err(map)?;
        layout_version(&mut conn, &quoted).await?
    };
    match found {
        Some(found) => accept(schema, found)?,
        None => install(pool, schema, &quoted).await?,
    }
    let oid: Oid = sqlx::query_scalar("SELECT oid FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(map)?;
    Ok(oid.0)
}

/// Whether a client of [`LAYOUT_VERSION`] may use a schema marked `found`.
fn accept(schema: &str, found: i32) -> Result<()> {
    let found = u32::try_from(found).unwrap_or(0);
    if found > LAYOUT_VERSION {
        return Err(Error::IncompatibleLayout {
            backend: BACKEND,
            found,
            supported: LAYOUT_VERSION,
        });
    }
    if found < LAYOUT_VERSION {
        return Err(Error::unsupported(
            BACKEND,
            format!(
                "schema {schema:?} of layout version {found}, older than this client's \
                 {LAYOUT_VERSION}: drop the schema, or move its state to a new schema with \
                 `distsync migrate`"
            ),
        ));
    }
    Ok(())
}

/// The transaction-level advisory lock every creation of the schema's objects takes: one
/// creator at a time.
const SETUP_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('distsync schema setup', 0))";

/// Whether `error` is PostgreSQL's undefined schema (`3F000`), table (`42P01`) or
/// function (`42883`): what a statement meets in a schema whose objects were dropped (a
/// store wiped under its clients, see [`crate::amnesia`]).
pub(crate) fn is_missing_object(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("3F000" | "42P01" | "42883")))
}

/// Creates the schema's objects and marks them with [`LAYOUT_VERSION`], unless another
/// client has marked the schema meanwhile (then its marker is checked as ours would be).
async fn install(pool: &PgPool, schema: &str, quoted: &str) -> Result<()> {
    let mut tx = PgTransaction::begin(pool, None).await.map_err(map)?;
    let conn: &mut PgConnection = &mut tx;
    // One creator at a time; the key is in the one-bigint space, which never meets the
    // two-int keys the backend's users may take.
    sqlx::query(SETUP_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    if let Some(found) = layout_version(conn, quoted).await? {
        tx.rollback().await.map_err(map)?;
        return accept(schema, found);
    }
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    for ddl in DDL {
        // No arguments: sent with the simple query protocol, which runs many statements.
        conn.execute(render(ddl, quoted).as_str())
            .await
            .map_err(map)?;
    }
    sqlx::query(&render(
        "INSERT INTO {s}.layout (version) VALUES ($1)",
        quoted,
    ))
    .bind(i32::try_from(LAYOUT_VERSION).unwrap_or(i32::MAX))
    .execute(&mut *conn)
    .await
    .map_err(map)?;
    tx.commit().await.map_err(map)?;
    tracing::info!(schema, layout = LAYOUT_VERSION, "distsync schema created");
    Ok(())
}

/// The layout version the schema is marked with, `None` if it has no marker.
async fn layout_version(conn: &mut PgConnection, quoted: &str) -> Result<Option<i32>> {
    let marked: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{quoted}.layout"))
        .fetch_one(&mut *conn)
        .await
        .map_err(map)?;
    if !marked {
        return Ok(None);
    }
    sqlx::query_scalar(&render("SELECT max(version) FROM {s}.layout", quoted))
        .fetch_one(&mut *conn)
        .await
        .map_err(map)
}
