//! The tables and functions of the backend, created on first use in the configured schema.
//!
//! Creation is idempotent (`CREATE ... IF NOT EXISTS`, `CREATE OR REPLACE`) and runs in
//! one transaction holding a transaction-level advisory lock (the only advisory lock
//! the backend takes), so concurrent first users take turns; a version row lets later
//! connections skip it. Nothing needs a superuser: the role needs `CREATE` on the
//! database (or an existing schema it owns), and `plpgsql`, which every PostgreSQL has.
//! PostgreSQL 14 or later is required (`CREATE OR REPLACE TRIGGER`).
//!
//! # Layout
//! - `sessions`: one heartbeat row per session (a random id, TTL, `expires_at`), renewed
//!   in batches by the backend's heartbeat ([`crate::connection::heartbeat`]). A session holds no
//!   connection: everything it holds or waits for is a row tied to this one (deleted
//!   with it), and counts until the row is deleted or expires (the lease gate, see
//!   [`crate::waiter_line`]).
//! - `lock_names`: the name table of locks, read-write locks, elections and semaphores
//!   (kind, name), with each name's fencing counter `token` (the election term) and
//!   `used_at` (the last grant, to the second: a grant within a second of the last one
//!   leaves it, so that its update is HOT); unused names are pruned by the sweep, their counters folded into
//!   `token_floor` first so that a name registered again never goes backwards (see
//!   [`crate::limits`]).
//! - `semaphores` and `semaphore_entries` (defined in [`crate::semaphore`] and created
//!   here after the rest): the line of every name, one entry row per acquisition —
//!   locks and write locks are exclusive entries of a line of one permit, read locks
//!   shared entries, candidacies exclusive entries carrying their value; the grant
//!   statement bumps the name's counter ([`crate::waiter_line`]). The guarded write
//!   (`guarded_put`, for `LockGuard::put_if_held`) checks an entry and writes `kv` in
//!   one statement.
//! - `election_leaders` (the current leader, tied to its session) and `election_log`
//!   (every win and proclaim, for `observe`; trimmed per election and pruned by age).
//! - `queue_items` / `queue_inflight`, `barriers`, `double_barriers` /
//!   `double_barrier_entries`, `kv` (STM).
//!
//! Changes are announced with `NOTIFY` on the channel `distsync_<schema oid>` (payload
//! `<kind>:<name>`: `q` queue, `b` barrier, `d` double barrier, `e` election; `s:<id>`
//! when a session is ended; `m:<session>.<entry>` when a waiting entry may be granted,
//! `M:<name id>` when all of a name's waiters must re-check), by triggers and functions,
//! so they are delivered at commit.

use sqlx::postgres::types::Oid;
use sqlx::postgres::PgConnection;
use sqlx::{Executor, PgPool};

use crate::error::map;
use distsync_core::Result;

/// Bumped whenever the DDL below changes.
const SCHEMA_VERSION: i32 = 21;

/// The DDL, in the order it runs; `{s}` stands for the quoted schema name.
const DDL: &str = include_str!("../sql/schema.sql");
const LINE: [&str; 3] = [
    include_str!("../sql/waiter_line.sql"),
    include_str!("../sql/guarded.sql"),
    include_str!("../sql/server_epoch.sql"),
];
const QUEUE: &str = include_str!("../sql/queue.sql");

/// Quotes a validated schema name as an SQL identifier.
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// `template` with `{s}` replaced by the quoted schema.
pub(crate) fn render(template: &str, quoted_schema: &str) -> String {
    template.replace("{s}", quoted_schema)
}

/// Creates the schema's objects unless they are already at [`SCHEMA_VERSION`] or later,
/// and returns the schema's OID.
///
/// A schema of a later version is used as it is, never taken back: a later version
/// keeps the functions' earlier signatures callable (new parameters come last, with
/// defaults that keep the earlier behaviour), so an older client runs against it,
/// while replacing its functions with older ones would leave both signatures, which
/// makes the calls ambiguous.
pub(crate) async fn ensure(pool: &PgPool, schema: &str) -> Result<u32> {
    let quoted = quote(schema);
    let found = current_version(pool, &quoted).await?;
    if let Some(later) = found.filter(|&found| found > SCHEMA_VERSION) {
        tracing::debug!(
            schema,
            found = later,
            ours = SCHEMA_VERSION,
            "the schema is of a later version; used as it is"
        );
    }
    if found.is_none_or(|found| found < SCHEMA_VERSION) {
        let ddl = render(DDL, &quoted);
        let clear = render("DELETE FROM {s}.meta", &quoted);
        let stamp = render("INSERT INTO {s}.meta (version) VALUES ($1)", &quoted);
        let mut tx = pool.begin().await.map_err(map)?;
        let conn: &mut PgConnection = &mut tx;
        // One creator at a time; the key is in the one-bigint space, which never meets the
        // two-int keys of locks.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('distsync schema setup', 0))")
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        // Another process may have brought the schema to this version or a later one
        // while this one waited for its turn.
        let now: Option<i32> = if found.is_some() {
            sqlx::query_scalar(&render("SELECT max(version) FROM {s}.meta", &quoted))
                .fetch_one(&mut *conn)
                .await
                .map_err(map)?
        } else {
            None
        };
        if now.is_some_and(|now| now >= SCHEMA_VERSION) {
            tx.rollback().await.map_err(map)?;
            return schema_oid(pool, schema).await;
        }
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        // No arguments: sent with the simple query protocol, which runs many statements.
        conn.execute(ddl.as_str()).await.map_err(map)?;
        // Since version 6 (8: the trigger takes the name's lock if free): the
        // semaphore's tables and functions (kept with its module).
        // Since version 10, with them: the guarded write (`guarded_put`, kept with its
        // module); versions 13-16: cheaper grants (a counter update that stays HOT, one
        // statement when nobody waits, one `next_token` for every grant); version 17:
        // asynchronous commits of releases and waits (`server_epoch`, see
        // `crate::connection::unflushed`), a leaner uncontended join; version 18: a release grants
        // the waiters it lets in (`sem_grant`); version 19: `sem_grant` reads a line
        // without shared entries with no window; versions 20-21: the functions whose
        // signatures changed (semaphore_join2, semaphore_check2, semaphore_leave2) under names of their own,
        // the earlier names and signatures kept for earlier clients.
        let semaphore = render(&LINE.concat(), &quoted);
        conn.execute(semaphore.as_str()).await.map_err(map)?;
        // Since version 11: the queue's holds, waiter line and wake-one trigger
        // (kept with its module); version 12: a waiter passes a wake-up on only if it
        // was woken.
        let queue = render(QUEUE, &quoted);
        conn.execute(queue.as_str()).await.map_err(map)?;
        sqlx::query(&clear).execute(&mut *conn).await.map_err(map)?;
        sqlx::query(&stamp)
            .bind(SCHEMA_VERSION)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        tracing::info!(schema, version = SCHEMA_VERSION, "distsync schema ready");
    }
    schema_oid(pool, schema).await
}

/// The OID of `schema`.
async fn schema_oid(pool: &PgPool, schema: &str) -> Result<u32> {
    let oid: Oid = sqlx::query_scalar("SELECT oid FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(map)?;
    Ok(oid.0)
}

async fn current_version(pool: &PgPool, quoted: &str) -> Result<Option<i32>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{quoted}.meta"))
        .fetch_one(pool)
        .await
        .map_err(map)?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar(&render("SELECT max(version) FROM {s}.meta", quoted))
        .fetch_one(pool)
        .await
        .map_err(map)
}

#[cfg(test)]
mod tests {
    use distsync_conformance::server_url;
    use sqlx::PgPool;

    use super::SCHEMA_VERSION;

    /// A schema of an earlier version is brought to this one (its functions' earlier
    /// signatures dropped, so no call is ambiguous); a schema of a later version is
    /// left as it is.
    #[tokio::test(flavor = "multi_thread")]
    async fn upgrades_earlier_schemas_and_never_takes_a_later_one_back() {
        let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let schema = format!("x_upgrade_{}", std::process::id());
        let sep = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{sep}schema={schema}");
        let pool = PgPool::connect(&url).await.unwrap();
        let version = |pool: PgPool, schema: String| async move {
            sqlx::query_scalar::<_, i32>(&format!("SELECT max(version) FROM {schema}.meta"))
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let signatures = |pool: PgPool, schema: String| async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname IN ('semaphore_leave', 'semaphore_join', \
                 'semaphore_check')",
            )
            .bind(schema)
            .fetch_one(&pool)
            .await
            .unwrap()
        };
        drop(crate::backend(&scoped).await.unwrap());
        assert_eq!(version(pool.clone(), schema.clone()).await, SCHEMA_VERSION);
        assert_eq!(signatures(pool.clone(), schema.clone()).await, 3);

        // An earlier version (17 to 19: the new parameters under the old names), with
        // a function of its signature beside this one's.
        sqlx::query(&format!("UPDATE {schema}.meta SET version = 16"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!(
            "CREATE FUNCTION {schema}.semaphore_leave(k integer, p_session bigint, \
             p_entry bigint, p_tombstone boolean, p_sync boolean DEFAULT true) RETURNS boolean \
             LANGUAGE sql AS 'SELECT false'"
        ))
        .execute(&pool)
        .await
        .unwrap();
        drop(crate::backend(&scoped).await.unwrap());
        assert_eq!(version(pool.clone(), schema.clone()).await, SCHEMA_VERSION);
        assert_eq!(
            signatures(pool.clone(), schema.clone()).await,
            3,
            "the earlier signature is dropped"
        );

        // A later version: used as it is.
        sqlx::query(&format!(
            "UPDATE {schema}.meta SET version = {}",
            SCHEMA_VERSION + 1
        ))
        .execute(&pool)
        .await
        .unwrap();
        drop(crate::backend(&scoped).await.unwrap());
        assert_eq!(
            version(pool.clone(), schema.clone()).await,
            SCHEMA_VERSION + 1,
            "a later schema was taken back"
        );
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
